"""One vocabulary: every stored value has its words in both console languages, and the
modules that must stay light do not load the web or database layers."""

import subprocess
import sys

import pytest

from ivr.vocabulary import LABELLED, Language
from ivr.web.i18n import LABELS


@pytest.mark.parametrize("language", list(Language))
@pytest.mark.parametrize("group", sorted(LABELLED))
def test_every_member_has_a_label_and_every_label_a_member(group, language):
    members = {member.value for member in LABELLED[group]}
    labels = LABELS[language][group]
    assert members - set(labels) == set(), f"{group} members without a {language} label"
    assert set(labels) - members == set(), f"{language} labels of {group} that no member has"
    assert all(text.strip() for text in labels.values())


def test_no_label_group_without_an_enum():
    for language in Language:
        assert set(LABELS[language]) == set(LABELLED)


@pytest.mark.parametrize(
    "module", ["ivr.flow", "ivr.twiml", "ivr.hours", "ivr.tickets", "ivr.vocabulary"]
)
def test_pure_modules_load_neither_flask_nor_sqlite_utils(module):
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('flask', 'sqlite_utils', 'werkzeug') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
