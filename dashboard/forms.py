"""Validation of what a person asks for: one form for the playground and the JSON API."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings

from streams.protocol import values
from streams.upstream.providers import get_providers

# Tools, metadata and the rest are sent upstream and stored with the run: bounded.
MAX_PARAMS_BYTES = 256 * 1024

# Parameters passed through to the upstream body, with their accepted types and ranges.
PARAM_RULES: dict[str, tuple[type | tuple[type, ...], float | None, float | None]] = {
    "temperature": ((int, float), None, None),  # the upstream judges the range (HTTP 400 is a fine outcome)
    "top_p": ((int, float), 0, 1),
    "max_output_tokens": (int, 1, 1_000_000),
    "top_logprobs": (int, 0, 20),
    "parallel_tool_calls": (bool, None, None),
    "store": (bool, None, None),
    "background": (bool, None, None),
}
DICT_PARAMS = {"reasoning", "text", "metadata", "stream_options", "tool_choice"}
LIST_PARAMS = {"tools", "include"}


class RunRequestForm(forms.Form):
    provider = forms.CharField(max_length=64)
    model = forms.CharField(max_length=200)
    input = forms.CharField(strip=False)
    instructions = forms.CharField(required=False, strip=False)
    # A JSON object, already decoded by the API view; checked by clean_params.
    params = forms.Field(required=False)

    def clean_provider(self) -> str:
        name = self.cleaned_data["provider"]
        if name not in get_providers():
            raise forms.ValidationError(f"unknown provider {name!r}; choose one of {', '.join(get_providers())}")
        return name

    def clean_input(self) -> str:
        value = values.clean_text(self.cleaned_data["input"])
        if not value.strip():
            raise forms.ValidationError("the input is empty")
        if len(value) > settings.STREAMSCOPE_MAX_INPUT_CHARS:
            raise forms.ValidationError(
                f"the input is {len(value)} characters; the limit is {settings.STREAMSCOPE_MAX_INPUT_CHARS}"
            )
        return value

    def clean_instructions(self) -> str:
        value = values.clean_text(self.cleaned_data.get("instructions") or "")
        if len(value) > settings.STREAMSCOPE_MAX_INPUT_CHARS:
            raise forms.ValidationError("the instructions are too long")
        return value

    def clean_params(self) -> dict[str, Any]:
        params = self.cleaned_data.get("params")
        if params in (None, ""):
            return {}
        if not isinstance(params, dict):
            raise forms.ValidationError("params must be a JSON object")
        try:
            params = values.clean_json(params)
            size = len(json.dumps(params, ensure_ascii=False, allow_nan=False).encode())
        except (values.BadValue, ValueError) as exc:
            raise forms.ValidationError(f"params: {exc}") from None
        if size > MAX_PARAMS_BYTES:
            raise forms.ValidationError(f"params are {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}")
        cleaned: dict[str, Any] = {}
        errors = []
        for key, value in params.items():
            if key in PARAM_RULES:
                kinds, low, high = PARAM_RULES[key]
                if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
                    errors.append(f"{key} must be a number, not true/false")
                    continue
                if not isinstance(value, kinds):
                    errors.append(f"{key} has the wrong type")
                    continue
                if low is not None and value < low or high is not None and value > high:
                    errors.append(f"{key} must be between {low} and {high}")
                    continue
                cleaned[key] = value
            elif key in DICT_PARAMS:
                if not isinstance(value, dict):
                    errors.append(f"{key} must be a JSON object")
                    continue
                cleaned[key] = value
            elif key in LIST_PARAMS:
                if not isinstance(value, list):
                    errors.append(f"{key} must be a JSON list")
                    continue
                cleaned[key] = value
            else:
                errors.append(f"unknown parameter {key!r}")
        if errors:
            raise forms.ValidationError(errors)
        return cleaned
