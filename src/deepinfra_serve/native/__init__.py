"""DeepInfra's native text-generation API: POST /v1/inference/{model}."""
