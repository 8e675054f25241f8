"""metaseg: few-shot image segmentation by meta-learned initialisations (TF2 / Keras 3)."""
from setuptools import find_packages, setup

setup(
    name="metaseg",
    version="0.1.0",
    description=(
        "Meta-learning initialisations for few-shot image segmentation: EfficientLab, "
        "Reptile and FOMAML in TensorFlow 2 / Keras 3."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # flags/ holds flag files (--flagfile flags/quickstart.flags), not code: metaseg.flags
    packages=find_packages(include=["metaseg", "metaseg.*", "data_tools"]),
    py_modules=["run_metasegnet"],
    package_data={"metaseg.resources": ["*.txt", "*.tsv", "*.md"],
                  "metaseg.app": ["static/*"],
                  # presets shipped by name (metaseg.presets): config, weights, metadata
                  "metaseg": ["shipped_presets/*/*.json", "shipped_presets/*/*.h5"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.10",
        "tensorboard",
        "numpy",
        "absl-py",
        "pillow",
        "scikit-learn",
        # metaseg.tfds builders and --dataset tfds:NAME. tfds >= 4.9.10 reads its metadata
        # with protobuf 7; it imports importlib_resources without declaring it on 3.9+.
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",
        # metaseg adapt --support COCO.json: polygons and RLE decoded as COCO defines them
        "pycocotools",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "matplotlib", "keras-cv", "scikit-image",
                 "starlette>=0.40", "uvicorn>=0.30", "httpx", "selenium>=4.10",
                 "keras-hub", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"],
        "plot": ["matplotlib"],
        "kerascv": ["keras-cv"],
        "kerashub": ["keras-hub"],
        # metaseg export --format onnx (tf2onnx, onnx) and the check that an exported file
        # runs in its own runtime (onnxruntime; ai-edge-litert's interpreter for litert)
        "export": ["tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"],
        "coco": ["pycocotools"],
        "app": ["starlette>=0.40", "uvicorn>=0.30"],
    },
    entry_points={"console_scripts": ["metaseg=metaseg.__main__:main"]},
)
