"""Facts about the running process that every stage asks: which process of how many (torch.distributed), and
where derived data lives (the cache folder).  Depends on no other locktune subpackage, so the cache, the
data sources and the trainer all use it without importing each other."""
