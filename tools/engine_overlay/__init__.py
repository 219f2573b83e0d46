"""engine-overlay: pinned upstream engine sources, ordered patch series and overlay files."""

__version__ = "0.1.0"
