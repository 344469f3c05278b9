"""The resources every workflow gets, chosen from environment variables.

With nothing set, everything is embedded: SQLite under BOSUN_HOME, the local model, BM25
over the sample policy documents, no LLM. Secrets are passed as EnvVar so that Dagster
resolves them at run time and never shows their values.
"""

from __future__ import annotations

import os

import dagster as dg

from resources.channels import email_channel_from_env
from resources.chat_model import DisabledChatModel
from resources.context_sources import ContextSources
from resources.database import BosunDatabase
from resources.embeddings import Embeddings
from resources.io_managers import IN_RUN_IO_MANAGER, DatabaseIOManager, in_run_io_manager
from resources.knowledge_base import PolicyDocuments
from resources.local_model import LocalModel
from resources.notifier import LogNotifier, WebhookNotifier
from resources.outbox import NotificationOutbox


def env_or_none(name: str):
    return dg.EnvVar(name) if os.environ.get(name) else None


def chat_model():
    if not (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")):
        return DisabledChatModel()
    from resources.llm import OpenAIStructuredLLM  # the openai client only when an LLM is configured

    # A local OpenAI-compatible server may need no key; the client still wants one.
    api_key = dg.EnvVar("OPENAI_API_KEY") if os.environ.get("OPENAI_API_KEY") else "unused"
    kwargs = {"api_key": api_key}
    if os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = dg.EnvVar("OPENAI_BASE_URL")
    if os.environ.get("BOSUN_LLM_MODEL"):
        kwargs["model"] = dg.EnvVar("BOSUN_LLM_MODEL")
    return OpenAIStructuredLLM(**kwargs)


def policy_embeddings():
    """Embeddings for policy retrieval only when BOSUN_EMBEDDINGS_MODEL names a model."""
    if not os.environ.get("BOSUN_EMBEDDINGS_MODEL"):
        return Embeddings()
    from resources.embeddings import OpenAIEmbeddings

    base = "BOSUN_EMBEDDINGS_BASE_URL" if os.environ.get("BOSUN_EMBEDDINGS_BASE_URL") else "OPENAI_BASE_URL"
    return OpenAIEmbeddings(
        api_key=dg.EnvVar("OPENAI_API_KEY") if os.environ.get("OPENAI_API_KEY") else "unused",
        base_url=env_or_none(base),
        model=dg.EnvVar("BOSUN_EMBEDDINGS_MODEL"),
    )


def notifier():
    """Alerts to BOSUN_ALERT_WEBHOOK_URL when set (an EnvVar: the URL may hold a token), else to the log."""
    if os.environ.get("BOSUN_ALERT_WEBHOOK_URL"):
        return WebhookNotifier(url=dg.EnvVar("BOSUN_ALERT_WEBHOOK_URL"))
    return LogNotifier()


def default_resources() -> dict:
    return {
        "bosun_db": BosunDatabase(url=env_or_none("BOSUN_DATABASE_URL"), audit_key=env_or_none("BOSUN_AUDIT_KEY")),
        "context_sources": ContextSources(database_url=env_or_none("BOSUN_DATABASE_URL")),
        "outbox": NotificationOutbox(url=env_or_none("BOSUN_OUTBOX_DATABASE_URL")),
        "local_model": LocalModel(model_dir=env_or_none("BOSUN_MODEL_DIR")),
        "policy_documents": PolicyDocuments(directory=env_or_none("BOSUN_POLICY_DIR")),
        "llm": chat_model(),
        "policy_embeddings": policy_embeddings(),
        "notifier": notifier(),
        "outbox_email": email_channel_from_env(),
        # No output is pickled to the local disk: values read across runs live in Bosun's
        # database, a batch run's own values in memory, or in the database when the steps run
        # on Celery workers (resources/io_managers.py).
        "io_manager": DatabaseIOManager(url=env_or_none("BOSUN_DATABASE_URL")),
        IN_RUN_IO_MANAGER: in_run_io_manager(url=env_or_none("BOSUN_DATABASE_URL")),
    }
