"""Pair sources (image + captions) and the image sets behind them."""
