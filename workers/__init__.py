"""Celery application and worker configuration."""
