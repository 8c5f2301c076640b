"""The README's Python examples run as written, in order, as one script (its training made
shorter): an API change that breaks them fails here, not in a reader's hands."""

import re
from pathlib import Path

from darm.models import registry

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_runs(tmp_path, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python") : text.index("### Sampling speed")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "load_checkpoint" in code and "prefix=prompt" in code  # the section is found
    code = code.replace("steps=200", "steps=4").replace("steps=300", "steps=6")
    # the family of one's own is defined in this same script, not in a my_family.py
    code = code.replace("import my_family  #", "#")
    monkeypatch.chdir(tmp_path)  # the example writes runs/py-gpt
    # the example registers a family: on a copy of the registry, so later tests do not see it
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    exec(compile(code, str(README), "exec"), {})
    assert (tmp_path / "runs" / "py-gpt" / "best.json").is_file()
    last = (tmp_path / "runs" / "py-gpt" / "last.json").read_text()
    assert '"step": 6' in last  # resumed from step 4 and trained on to the longer schedule
    assert "trigram" in registry.list_models()
