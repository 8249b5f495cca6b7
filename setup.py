"""Build the optional C speedups; everything else is declared in pyproject.toml.

The extension is optional: where it cannot be compiled, ratekeeper installs and runs on its
pure-Python path, which decides identically.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ratekeeper._speedups",
            ["src/ratekeeper/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
