"""What we tell the merchant: the outbox, the event views, delivery, status announcements."""
