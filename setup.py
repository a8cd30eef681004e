from setuptools import find_packages, setup

setup(
    name="tinydet",
    version="0.1.0",
    description="Object detection for microcontrollers: config -> training -> mAP -> patch-based int8 firmware",
    packages=find_packages(include=["tinydet", "tinydet.*"]),
    # the C runtime, targets, demo firmware and configs (tinydet/_share links to deploy/ and configs/;
    # the wheel gets copies), found at run time with importlib.resources (tinydet/resources.py)
    package_data={"tinydet": ["_share/**/*"]},
    python_requires=">=3.10",
    install_requires=[line.split("#")[0].strip() for line in open("requirements.txt") if line.split("#")[0].strip()],
    entry_points={"console_scripts": ["tinydet = tinydet.cli:main"]},
)
