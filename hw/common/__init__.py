"""Gateware every block shares (requantizer, divider, adder/mux trees, stream stages, register bank)."""
