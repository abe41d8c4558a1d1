"""DeepInfra's LoRA routes' bodies and answers (`LoraModelUploadIn`, `DeploymentOut`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.models import RequestModel, ResponseModel


class LoraModelUploadIn(RequestModel):
    lora_model_name: str = Field(
        min_length=3,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The model name it is called by, Owner/Name.",
    )
    hf_model_name: str = Field(
        min_length=1,
        max_length=1024,
        description="A hub repository (Owner/Name), or an absolute path inside a folder the "
        "operator lists in ADAPTER_DIRS.",
    )
    hf_token: str | None = Field(None, description="For a private hub repository; not kept.")
    base_model_name: str | None = Field(
        None, description="The base model; default: the one this server serves."
    )


class DeploymentOut(ResponseModel):
    """DeepInfra's DeploymentOut, for an adapter."""

    type: Literal["lora"] = "lora"
    deploy_id: str
    model_name: str
    version: str
    task: str = "text-generation"
    status: Literal["deployed", "deleted"]
    fail_reason: str = ""
    created_at: str
    updated_at: str
