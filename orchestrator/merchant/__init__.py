"""What the merchant asks: the service's commands and their request models."""
