"""DeepInfra's model information routes from the cards, in the shapes of DeepInfra's OpenAPI
document (its `ModelInfoOut`, `ModelOut` and `ModelPricingTokens`, whose required fields and
field names are copied below)."""

from __future__ import annotations

import httpx

from ..helpers import MODEL

MODEL_INFO_REQUIRED = {
    "model_name", "type", "tags", "reported_type", "version", "featured", "public", "curl_inv",
    "cmdline_inv", "txt_docs", "out_example", "out_docs", "pricing", "schemas",
}  # fmt: skip
MODEL_INFO_FIELDS = MODEL_INFO_REQUIRED | {
    "description", "mf_description", "owner", "mask_token", "in_schema", "out_schema",
    "in_fields", "doc_blocks", "short_doc_block", "meta", "max_tokens", "max_output_tokens",
    "replaced_by", "deprecated", "quantization", "mmlu", "expected", "import_time", "is_partner",
    "is_custom_deployable", "mf_name", "mf_title",
}  # fmt: skip
MODEL_OUT_FIELDS = {
    "model_name", "type", "reported_type", "description", "cover_img_url", "tags", "pricing",
    "max_tokens", "replaced_by", "deprecated", "quantization", "mmlu", "expected", "private",
    "is_partner",
}  # fmt: skip
PRICING_FIELDS = {
    "short", "full", "table", "type", "cents_per_input_token", "cents_per_output_token",
    "rate_per_input_token_cached", "rate_per_input_token_cache_write",
}  # fmt: skip


def test_model_info_has_deepinfras_shape_and_the_tools_tag(client: httpx.Client) -> None:
    info = client.get(f"/models/{MODEL}").json()
    assert MODEL_INFO_REQUIRED <= set(info) <= MODEL_INFO_FIELDS
    assert set(info["pricing"]) <= PRICING_FIELDS
    assert info["model_name"] == MODEL and info["version"] == "1"
    assert info["tags"] == ["test", "cpu", "tools"]  # the card calls functions
    assert info["type"] == "text-generation" and info["max_tokens"] == 1024
    # The card's USD per million tokens, in cents per token.
    assert info["pricing"]["cents_per_input_token"] == 1.0 * 100 / 1e6
    assert info["pricing"]["cents_per_output_token"] == 2.0 * 100 / 1e6
    assert client.get(f"/models/{MODEL}:1").json()["model_name"] == MODEL
    missing = client.get(f"/models/{MODEL}:2")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"The model `{MODEL}:2` does not exist"}


def test_models_list_has_deepinfras_shape(client: httpx.Client) -> None:
    listing = client.get("/models/list").json()
    assert all(set(m) == MODEL_OUT_FIELDS for m in listing)
    assert [m["model_name"] for m in listing] == [MODEL, f"{MODEL}-pirate"]  # and its adapter
