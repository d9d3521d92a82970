"""alertscale: a Prometheus-alert-driven autoscaler for Docker containers on a few servers.

The application factory is alertscale.app:create_app; this package file stays empty so
that the `alertscale` command (and gunicorn's master process) loads only what it needs.
"""
