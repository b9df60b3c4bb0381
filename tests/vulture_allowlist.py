# Names vulture reports as unused in src/locktune that are used where it cannot see: read by a library through
# a protocol or by reflection.  Read by vulture only (tests/test_dead_code.py), never imported.  Every entry says
# who uses it; a name that no longer occurs in src/locktune fails the test, so this list cannot go stale.
# Registered functions (BENCHMARKS.register, @finding, @on_benchmark, FastAPI routes, ...) are not listed here:
# the test ignores their decorators.
_ = object

# torch's device-module and backend protocols (runtime/fake_device.py): torch calls these by name.
_._is_in_bad_fork
_.synchronize
_.manual_seed_all
_.get_amp_supported_dtype
_.getBackendName
# ... and passes these arguments (Tensor.__repr__, .numpy, __tensor_unflatten__, __torch_dispatch__, copy_).
tensor_contents
force
outer_size
outer_stride
types
non_blocking

# Callback signatures fixed by their caller: cairosvg's url_fetcher(url, resource_type) (data/svg.py), and
# tqdm's set_postfix(refresh=...) that LineProgress stands in for (progress.py).
resource_type
refresh

# Attributes a library reads after we set them: tarfile.TarInfo.mtime (data/export.py), a tokenizers
# Tokenizer's normalizer and pre_tokenizer (towers/text/vocab.py).
_.mtime
_.normalizer
_.pre_tokenizer

# A pydantic response-model field, serialised by FastAPI (serve/app.py LabelScore).
probability

# LitModel.encode_image_features (api.py): public, but neither called nor tested anywhere; api.py is being
# reworked (issue 26 item 4) — delete this line when that rework keeps it with a test, or drops it.
_.encode_image_features
