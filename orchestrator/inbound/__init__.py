"""What Plural tells us: webhooks and the customer's return to the return URL."""
