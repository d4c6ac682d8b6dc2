"""The pure core: money, cards, EMI arithmetic, saga states and status mapping.

Nothing here imports Celery, HTTP or database code.
"""
