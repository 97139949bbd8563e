"""The UI/API workflow writer, on a small hand-written /object_info (no server needed)."""

import pytest

from harness.workflow_format import WorkflowSpec, WorkflowSpecError, to_api, to_ui, widget_names

INFO = {
    "Loader": {"input": {"required": {"name": [["a.ckpt", "b.ckpt"], {}]}},
               "input_order": {"required": ["name"]},
               "output": ["MODEL", "LATENT"], "output_name": ["MODEL", "LATENT"]},
    "Sampler": {
        "input": {"required": {"model": ["MODEL", {}],
                               "seed": ["INT", {"default": 0, "control_after_generate": True}],
                               "steps": ["INT", {"default": 20}],
                               "mode": ["COMBO", {"options": ["x", "y"], "default": "y"}]},
                  "optional": {"latent": ["LATENT", {}],
                               "scale": ["FLOAT", {"default": 1.5}]}},
        "input_order": {"required": ["model", "seed", "steps", "mode"],
                        "optional": ["latent", "scale"]},
        "output": ["LATENT"], "output_name": ["LATENT"]},
}


def _spec(**sampler):
    wf = WorkflowSpec("t")
    wf.add("Note", (0, 0), text="hello")
    loader = wf.add("Loader", (0, 100), name="b.ckpt")
    wf.add("Sampler", (300, 0), model=loader.out("MODEL"), **sampler)
    return wf, loader


def test_widget_order_has_control_value_after_the_seed():
    assert widget_names(INFO["Sampler"]) == ["seed", "control_after_generate", "steps", "mode",
                                             "scale"]


def test_ui_and_api_agree():
    wf, loader = _spec(seed=7, latent=None)
    wf.nodes[-1].inputs["latent"] = loader.out("LATENT")
    ui, api = to_ui(wf, INFO), to_api(wf, INFO)
    sampler = ui["nodes"][2]
    assert sampler["widgets_values"] == [7, "fixed", 20, "y", 1.5]
    assert [i["name"] for i in sampler["inputs"]] == ["model", "latent", "seed", "steps",
                                                      "mode", "scale"]
    assert sampler["inputs"][1]["shape"] == 7  # an optional socket
    assert ui["links"] == [[1, 2, 0, 3, 0, "MODEL"], [2, 2, 1, 3, 1, "LATENT"]]
    assert ui["nodes"][1]["outputs"][0]["links"] == [1]
    assert ui["nodes"][0]["widgets_values"] == ["hello"]
    assert api == {"2": {"class_type": "Loader", "inputs": {"name": "b.ckpt"}},
                   "3": {"class_type": "Sampler", "inputs": {
                       "seed": 7, "steps": 20, "mode": "y", "scale": 1.5,
                       "model": ["2", 0], "latent": ["2", 1]}}}


@pytest.mark.parametrize("bad, message", [
    ({"sead": 1}, "has no input"),
    ({"mode": "z"}, "is not one of"),
])
def test_bad_values_are_refused(bad, message):
    wf, _ = _spec(**bad)
    with pytest.raises(WorkflowSpecError, match=message):
        to_ui(wf, INFO)


def test_links_are_checked():
    wf, loader = _spec()
    wf.nodes[-1].inputs["model"] = loader.out("LATENT")
    with pytest.raises(WorkflowSpecError, match="takes MODEL"):
        to_api(wf, INFO)
    wf.nodes[-1].inputs.pop("model")
    with pytest.raises(WorkflowSpecError, match="required input 'model'"):
        to_api(wf, INFO)
    wf.nodes[-1].inputs["model"] = loader.out("CLIP")
    with pytest.raises(WorkflowSpecError, match="no output 'CLIP'"):
        to_api(wf, INFO)
