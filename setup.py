from setuptools import find_packages, setup

setup(
    name="tb_unfreeze",
    version="0.1.0",
    description="Turn a frozen TensorFlow graph back into a trainable, verified model; an Unfreeze tab for "
    "TensorBoard.",
    packages=find_packages(include=["tb_unfreeze", "tb_unfreeze.*"]),
    package_data={"tb_unfreeze.plugin": ["static/*", "static/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "tensorboard>=2.21,<2.22",
        "werkzeug>=3",
        "numpy",
        "rich>=13",
    ],
    extras_require={
        "tf": ["tensorflow-cpu>=2.21,<2.22"],
        "demo": ["scikit-learn"],
        "test": ["pytest", "hypothesis", "playwright", "scikit-learn", "ruff", "jsonschema"],
    },
    entry_points={
        "console_scripts": ["tb-unfreeze=tb_unfreeze.cli:main"],
        "tensorboard_plugins": ["unfreeze=tb_unfreeze.plugin.loader:UnfreezeLoader"],
    },
)
