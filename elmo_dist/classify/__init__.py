"""The downstream stage: a text classifier on exported ELMo layers, with baselines.

``pipeline.run_classify`` does it all (documents, layers exported or read, split, training with
early stopping, results); the parts are usable alone: ``data`` (label tables, folders, the
split), ``bbc`` (the embedded BBC News default), ``text`` (document tokens), ``layers`` (HDF5
layers, on-the-fly export with a cache, the random-init control), ``model`` (layer
combinations, encoders, ELMo + bag of words), ``bow`` (TF-IDF), ``sklearn_bow`` (the
scikit-learn baseline), ``train`` (the loop), ``runs`` (the models and one training run),
``summary`` (mean/std over seeds, the pretraining gain), ``report`` (metrics, confusion plot).
"""
from .bbc import load_bbc
from .data import LabeledDocs, make_split, read_folders, read_labels, read_table, stratified_split
from .model import BagOfWordsClassifier, FusionClassifier, LayerAttention, LayerClassifier, ScalarMixCombiner
from .pipeline import MODES, ClassifyConfig, run_classify, summary_table

__all__ = ["BagOfWordsClassifier", "ClassifyConfig", "FusionClassifier", "LabeledDocs", "LayerAttention",
           "LayerClassifier", "MODES", "ScalarMixCombiner", "load_bbc", "make_split", "read_folders", "read_labels",
           "read_table", "run_classify", "stratified_split", "summary_table"]
