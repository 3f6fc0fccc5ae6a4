"""Tests of the images, compose file and cluster manifests in docker/, and a loopback cluster."""
