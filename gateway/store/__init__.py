"""Storage (replaced by the pgstore branch's package when merged)."""
