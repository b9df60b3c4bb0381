"""Every whole number in the config is checked on its own before any check that combines keys: a negative or
zero count is one line naming that key (not a schedule or a cross-field rule it happens to break)."""

import pytest

from locktune.config import COUNTS, load_config
from locktune.errors import LocktuneError


@pytest.mark.parametrize("key", sorted(COUNTS))
def test_each_count_below_its_least_names_itself(key):
    least, _ = COUNTS[key]
    for bad in ({-5, least - 1} if least == 1 else {-5, -1}):
        with pytest.raises(LocktuneError, match=rf"^config key '{key}' must be (at least 1|0 or more \(0: [^)]*\)), "
                                                rf"got {bad}$"):
            load_config(None, [f"{key}={bad}"])


def test_negative_steps_on_the_command_line_is_one_line_about_train_steps(capsys):
    from locktune.cli import main

    assert main(["train", "train.steps=-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "locktune: error: config key 'train.steps' must be at least 1, got -5"


def test_the_defaults_and_zero_where_zero_means_something_still_load():
    load_config(None, [f"{key}=0" for key, (least, _) in COUNTS.items() if least == 0])
