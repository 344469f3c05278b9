"""Versioned prompt files: hash as version, schema as the answer's model."""

import pytest
from pydantic import ValidationError

from orchestration.decision.prompts import load_prompt

PROMPT = """name: judge
inputs: [thing]
output_schema:
  type: object
  properties:
    verdict: {type: string, enum: [accept, deny]}
    score: {type: number, minimum: 0, maximum: 1}
    note: {type: [string, "null"], maxLength: 20}
  required: [verdict, score, note]
template: |
  Judge {thing}.
"""


def test_the_version_is_the_content_hash_and_the_schema_validates_answers(tmp_path):
    path = tmp_path / "judge.yaml"
    path.write_text(PROMPT)
    p = load_prompt(path)
    assert p.version.startswith("judge-") and p.render(thing="it") == "Judge it.\n"
    assert p.output_model.model_validate_json('{"verdict": "accept", "score": 0.5, "note": null}').verdict == "accept"
    for bad in (
        '{"verdict": "maybe", "score": 0.5, "note": null}',
        '{"verdict": "accept", "score": 2, "note": null}',
        '{"verdict": "accept", "score": 0.5, "note": null, "extra": 1}',
        '{"verdict": "accept"}',
    ):
        with pytest.raises(ValidationError):
            p.output_model.model_validate_json(bad)
    path.write_text(PROMPT.replace("Judge", "Assess"))
    assert load_prompt(path).version != p.version  # an edit is a new version, no code change


def test_a_prompt_whose_inputs_do_not_match_its_template_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(PROMPT.replace("inputs: [thing]", "inputs: [other]"))
    with pytest.raises(ValueError, match="placeholders"):
        load_prompt(path)


def test_the_shipped_invoice_prompt_loads():
    from assets.invoices.reasoning import PROMPT_PATH

    p = load_prompt(PROMPT_PATH)
    assert set(p.output_model.model_fields) == {"decision", "amount", "confidence", "reason"}


def test_every_version_of_a_prompt_in_its_folder_by_version_and_file_name(tmp_path):
    from orchestration.decision.prompts import prompt_versions

    (tmp_path / "judge.yaml").write_text(PROMPT)
    (tmp_path / "judge.strict.yaml").write_text(PROMPT.replace("Judge {thing}.", "Judge {thing} strictly."))
    (tmp_path / "other.yaml").write_text(PROMPT.replace("name: judge", "name: other"))
    found = prompt_versions(tmp_path / "judge.yaml")
    assert set(found) == {"judge", "judge.strict", found["judge"].version, found["judge.strict"].version}
    assert found["judge"].version == load_prompt(tmp_path / "judge.yaml").version != found["judge.strict"].version
