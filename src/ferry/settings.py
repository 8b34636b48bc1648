"""Process settings (FERRY_ prefix). Read once at an entry point and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore")

    home: Path = Field(default=Path(".ferry"), description="Where embedded state lives.")
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the registry database; default sqlite under FERRY_HOME.",
    )
    artifacts_url: str | None = Field(
        default=None,
        description="fsspec URL of the artifact store; default a directory under FERRY_HOME.",
    )
    actor: str | None = Field(default=None, description="Who is recorded in registry events.")
    prediction_log_url: str | None = Field(
        default=None, description="Database for the prediction log (several replicas)."
    )
    predict_tokens: str = Field(
        default="", description="Comma-separated bearer tokens for inference (empty: open)."
    )
    admin_tokens: str = Field(
        default="",
        description="Comma-separated admin tokens; repository routes exist only with one.",
    )

    def token_list(self, scope: str) -> tuple[str, ...]:
        raw = self.admin_tokens if scope == "admin" else self.predict_tokens
        return tuple(t.strip() for t in raw.split(",") if t.strip())

    def resolved_registry_url(self) -> str:
        if self.registry_url:
            return self.registry_url
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"

    def resolved_artifacts_url(self) -> str:
        if self.artifacts_url:
            return self.artifacts_url
        return str((self.home / "artifacts").resolve())
