"""Python function tools: the JSON Schema comes from the type hints (or one pydantic model parameter), and
arguments are validated by pydantic before the function runs.

    @function_tool(side_effects=True)
    async def create_ticket(subject: Annotated[str, Field(description="one line")], ctx: ToolContext) -> str:
        ...

A parameter annotated :class:`ToolContext` receives the call's context and is left out of the schema.
Sync functions run in a thread (``asyncio.to_thread``): a tool must never block the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_type_hints, overload

from pydantic import BaseModel, ValidationError, create_model

from core.errors import ToolError
from core.tools.spec import ToolContext, ToolSpec

ToolFunction = Callable[..., Any]


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class FunctionTool:
    def __init__(
        self,
        fn: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
        admin_only: bool = False,
        confirm: str = "",
    ) -> None:
        self._fn = fn
        hints = get_type_hints(fn, include_extras=True)
        self._ctx_param: str | None = None
        self._model_param: str | None = None
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            hint = hints.get(pname, Any)
            if hint is ToolContext or ToolContext in get_args(hint):
                self._ctx_param = pname
                continue
            if inspect.isclass(hint) and issubclass(hint, BaseModel):
                self._model_param = pname
                model: type[BaseModel] = hint
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (hint, default)
        if self._model_param is not None:
            if fields:
                raise TypeError(f"{fn.__name__}: a pydantic-model tool takes only the model (and ctx)")
            self._model = model
        else:
            self._model = create_model(f"{fn.__name__}_args", **fields)
        schema = self._model.model_json_schema()
        schema.pop("title", None)
        schema.setdefault("properties", {})
        doc = inspect.getdoc(fn) or ""
        self.spec = ToolSpec(
            name=name or fn.__name__,
            description=description or doc.split("\n\n")[0].replace("\n", " "),
            parameters=schema,
            side_effects=side_effects,
            admin_only=admin_only,
            confirm=confirm,
        )

    def validate(self, arguments: Mapping[str, Any]) -> BaseModel:
        try:
            return self._model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolError(f"invalid arguments: {_describe(exc)}") from None

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext) -> str:
        parsed = self.validate(arguments)
        if self._model_param is not None:
            kwargs: dict[str, Any] = {self._model_param: parsed}
        else:
            kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        if self._ctx_param is not None:
            kwargs[self._ctx_param] = ctx
        if inspect.iscoroutinefunction(self._fn):
            result = await self._fn(**kwargs)
        else:
            result = await asyncio.to_thread(self._fn, **kwargs)
            if inspect.isawaitable(result):  # pragma: no cover - a sync def returning a coroutine
                result = await result
        return result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)


@overload
def function_tool(fn: ToolFunction, /) -> FunctionTool: ...


@overload
def function_tool(
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    admin_only: bool = False,
    confirm: str = "",
) -> Callable[[ToolFunction], FunctionTool]: ...


def function_tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
    admin_only: bool = False,
    confirm: str = "",
) -> FunctionTool | Callable[[ToolFunction], FunctionTool]:
    """Decorator: turns a function into a :class:`FunctionTool` (usable bare or with options)."""

    def wrap(f: ToolFunction) -> FunctionTool:
        return FunctionTool(
            f,
            name=name,
            description=description,
            side_effects=side_effects,
            admin_only=admin_only,
            confirm=confirm,
        )

    return wrap(fn) if fn is not None else wrap


__all__ = ["FunctionTool", "function_tool"]
