"""Installation of Plancton: the package, its two commands and its default files."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("plancton/__init__.py").read_text()).group(1)

setup(
    name="plancton",
    version=VERSION,
    description="A daemon that runs disposable pilot containers on a host's spare CPU",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["plancton", "plancton.*"]),
    # the owner's page, served at / of metrics_listen
    package_data={"plancton.metrics": ["page.html"]},
    scripts=["bin/planctonctl", "bin/plancton-bootstrap"],
    data_files=[
        (
            "share/plancton",
            ["etc/config.yaml", "etc/plancton.service", "etc/plancton-update.service", "etc/plancton-update.timer"],
        )
    ],
    install_requires=[
        "docker>=7.0,<8",
        "PyYAML>=6.0,<7",
        "python-daemon>=3.0,<4",
        "influxdb>=5.3,<6",
        "psutil>=5.9,<8",
        # logind's idle hint over the system D-Bus, in pure Python (no libdbus, no GLib loop)
        "jeepney>=0.8,<1",
        # the Prometheus endpoint and textfile; 0.20 is the first whose server can be stopped
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2,<3",
            "hypothesis>=6.100,<7",
            "ruff>=0.6,<1",
            "mypy>=1.10,<3",
            "types-PyYAML",
            "types-psutil",
            "types-requests",
            # drives Debian's chromium (through its chromedriver) in the owner's page test
            "selenium>=4.20,<5",
        ],
        "bench": ["matplotlib>=3.7,<4"],
    },
    classifiers=[
        "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
    ],
)
