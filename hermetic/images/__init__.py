"""Registry-free base images built from Debian packages (see debimage.py for how)."""
