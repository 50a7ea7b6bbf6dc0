"""Registry-free toolchain: Docker engine set-up, kind, node image and base image recipes."""
