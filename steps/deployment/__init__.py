"""Deployment: the serving image, the image registry, a local container, the Kubernetes rollout,
the local scoring server and the compose services stack."""
