"""Put on PYTHONPATH by tests/test_multinode.py: inside a torchrun worker (RANK is set) with LOCKTUNE_TEST_SPY set
to a folder, record what this rank does, seen from outside locktune's own code:
  rank<R>.env      the launcher's variables (RANK, LOCAL_RANK, GROUP_RANK, ...): two nodes, not two processes
  rank<R>.reads    one line per image read from a tar ("path<TAB>offset"): which shards this rank decoded
  rank<R>.gathers  one line per all-gather/gather ("name<TAB>bytes"): what passed between ranks
"""

import os

if os.environ.get("LOCKTUNE_TEST_SPY") and "RANK" in os.environ:
    import json
    import pickle

    import torch
    import torch.distributed as dist

    from locktune.data.sources import webdataset

    _spy = os.path.join(os.environ["LOCKTUNE_TEST_SPY"], f"rank{os.environ['RANK']}")
    with open(f"{_spy}.env", "w") as f:
        json.dump({k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE",
                                                  "LOCAL_WORLD_SIZE")}, f)

    def _log(suffix: str, line: str) -> None:
        with open(f"{_spy}.{suffix}", "a") as f:
            f.write(line + "\n")

    _read_bytes = webdataset.TarImages.read_bytes

    def _read_and_log(self, index):
        path, offset, _ = self.locations[index]
        _log("reads", f"{path}\t{offset}")
        return _read_bytes(self, index)

    webdataset.TarImages.read_bytes = _read_and_log

    def _size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, (list, tuple)):
            return sum(_size(v) for v in value)
        return len(pickle.dumps(value))

    def _logged(name, sent: int):
        real = getattr(dist, name)

        def call(*args, **kwargs):
            _log("gathers", f"{name}\t{_size(args[sent])}")
            return real(*args, **kwargs)

        return call

    # Which positional argument holds what this rank sends.
    for _name, _sent in (("all_gather", 1), ("all_gather_object", 1), ("all_gather_into_tensor", 1), ("gather", 0),
                         ("gather_object", 0)):
        setattr(dist, _name, _logged(_name, _sent))
