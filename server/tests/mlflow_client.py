"""End-to-end check of the MLflow Model Registry REST API using the real MLflow client.

What it tests
-------------
Drives every Model Registry method of ``mlflow.MlflowClient`` that the server is
meant to support, against a live server, and asserts on what comes back:

  registered models : create (with description + tags), duplicate create
                      (RESOURCE_ALREADY_EXISTS), get, get missing
                      (RESOURCE_DOES_NOT_EXIST), search (``name = '...'`` and
                      ``name LIKE '...%'``), update, rename, set/delete tag, delete
  model versions    : create x2 (with tags + description), the server-added tag
                      ``atelier.approval_status = PendingManualApproval``, get,
                      search (``name='...'``), update, get_latest_versions,
                      set/delete tag, get_model_version_download_uri, delete
  aliases           : set, get_model_version_by_alias, delete, get deleted alias
                      (must raise)

Everything it creates lives under a unique name
``<ATELIER_MODEL_PREFIX>-<unix time>-<random>``; the model is deleted at the end
(and on a best-effort basis if a check fails part way).

How to run
----------
Only the ``mlflow-skinny`` client and the standard library are needed::

    python3 -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow-skinny
    MLFLOW_TRACKING_URI=http://127.0.0.1:8080 \\
    MLFLOW_TRACKING_TOKEN=<bearer token> \\
    ATELIER_SOURCE_URI=<source string accepted by create_model_version> \\
    ATELIER_MODEL_PREFIX=mlflow-test \\
        /tmp/mlflow-venv/bin/python server/tests/mlflow_client.py

MLFLOW_TRACKING_URI  server root (the client appends /api/2.0/mlflow/...)
MLFLOW_TRACKING_TOKEN sent by the client as ``Authorization: Bearer <token>``
ATELIER_SOURCE_URI   ``source`` passed to create_model_version
ATELIER_MODEL_PREFIX optional name prefix (default ``mlflow-test``)

Unless already set, the script also sets MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 and
MLFLOW_HTTP_REQUEST_TIMEOUT=30 (so a 5xx fails at once instead of after minutes
of client retries) and MLFLOW_DISABLE_TELEMETRY=true.

It prints one line per check and exits 1 on the first failure (2 if the
environment is incomplete), 0 when every check passed.
"""

import os
import sys
import time
import traceback
import uuid
import warnings

# Client behaviour knobs; must be set before mlflow is imported/used.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402

APPROVAL_TAG = "atelier.approval_status"
APPROVAL_PENDING = "PendingManualApproval"


class CheckFailed(AssertionError):
    pass


def check(description, condition, detail=""):
    """Print one line for a check; raise CheckFailed if it does not hold."""
    if not condition:
        raise CheckFailed(f"{description}: {detail}" if detail else description)
    print(f"ok   {description}", flush=True)


def is_mlflow_exception(exc):
    # MlflowException is matched by class name so that the script only needs
    # `from mlflow import MlflowClient`.
    return any(cls.__name__ == "MlflowException" for cls in type(exc).__mro__)


def expect_mlflow_error(description, fn, error_code=None):
    """Run fn(); it must raise MlflowException (with error_code, when given)."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - we inspect what was raised
        if not is_mlflow_exception(exc):
            raise CheckFailed(
                f"{description}: expected MlflowException, got {type(exc).__name__}: {exc}"
            ) from exc
        code = getattr(exc, "error_code", None)
        if error_code is not None and code != error_code:
            raise CheckFailed(
                f"{description}: expected error_code {error_code}, got {code}: {exc}"
            ) from exc
        print(f"ok   {description} (raised {code})", flush=True)
        return exc
    raise CheckFailed(f"{description}: expected MlflowException, call returned {result!r}")


def require_env(name):
    value = os.environ.get(name, "")
    if not value:
        print(f"FAIL environment variable {name} must be set", file=sys.stderr)
        sys.exit(2)
    return value


def run_checks(client, source, prefix, created):
    base = f"{prefix}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
    name = f"{base}-model"
    renamed = f"{base}-renamed"
    missing = f"{base}-does-not-exist"
    created.append(name)

    # ---- registered model: create / get / errors ---------------------------------
    rm = client.create_registered_model(
        name,
        tags={"team": "atelier", "purpose": "client-test"},
        description="initial description",
    )
    check("create_registered_model returns the model name", rm.name == name, repr(rm.name))
    check(
        "create_registered_model returns the description",
        rm.description == "initial description",
        repr(rm.description),
    )
    check(
        "create_registered_model returns the tags",
        rm.tags.get("team") == "atelier" and rm.tags.get("purpose") == "client-test",
        repr(rm.tags),
    )

    expect_mlflow_error(
        "create_registered_model with a duplicate name raises",
        lambda: client.create_registered_model(name),
        "RESOURCE_ALREADY_EXISTS",
    )

    rm = client.get_registered_model(name)
    check("get_registered_model returns the model", rm.name == name, repr(rm.name))
    check(
        "get_registered_model has the description",
        rm.description == "initial description",
        repr(rm.description),
    )
    check(
        "get_registered_model has the tags",
        rm.tags == {"team": "atelier", "purpose": "client-test"},
        repr(rm.tags),
    )
    check(
        "get_registered_model creation_timestamp is epoch millis",
        isinstance(rm.creation_timestamp, int) and rm.creation_timestamp > 1_000_000_000_000,
        repr(rm.creation_timestamp),
    )

    expect_mlflow_error(
        "get_registered_model of a missing model raises",
        lambda: client.get_registered_model(missing),
        "RESOURCE_DOES_NOT_EXIST",
    )

    # ---- search registered models -------------------------------------------------
    found = client.search_registered_models(filter_string=f"name = '{name}'")
    check(
        "search_registered_models name = '...' finds exactly the model",
        [m.name for m in found] == [name],
        repr([m.name for m in found]),
    )
    found = client.search_registered_models(filter_string=f"name LIKE '{base}%'")
    check(
        "search_registered_models name LIKE '...%' finds the model",
        [m.name for m in found] == [name],
        repr([m.name for m in found]),
    )
    found = client.search_registered_models(filter_string=f"name = '{missing}'")
    check("search_registered_models for a missing name is empty", len(found) == 0, repr(found))

    # ---- update / tags ------------------------------------------------------------
    rm = client.update_registered_model(name, description="updated description")
    check(
        "update_registered_model returns the new description",
        rm.description == "updated description",
        repr(rm.description),
    )
    check(
        "get_registered_model sees the new description",
        client.get_registered_model(name).description == "updated description",
    )

    client.set_registered_model_tag(name, "reviewed", "yes")
    tags = client.get_registered_model(name).tags
    check("set_registered_model_tag is visible", tags.get("reviewed") == "yes", repr(tags))
    client.delete_registered_model_tag(name, "reviewed")
    tags = client.get_registered_model(name).tags
    check(
        "delete_registered_model_tag removes only that tag",
        "reviewed" not in tags and tags.get("team") == "atelier",
        repr(tags),
    )

    # ---- model versions -----------------------------------------------------------
    # await_creation_for=0: the client would otherwise poll get_model_version for up
    # to 5 minutes while status is PENDING_REGISTRATION; READY is asserted directly.
    v1 = client.create_model_version(
        name,
        source,
        tags={"stage-hint": "first"},
        description="version one",
        await_creation_for=0,
    )
    check("create_model_version returns the model name", v1.name == name, repr(v1.name))
    check(
        "create_model_version returns version '1' (a string)",
        v1.version == "1",
        repr(v1.version),
    )
    check("create_model_version status is READY", v1.status == "READY", repr(v1.status))
    check("create_model_version echoes the source", v1.source == source, repr(v1.source))
    check(
        "create_model_version returns the description",
        v1.description == "version one",
        repr(v1.description),
    )
    check(
        "create_model_version returns the tags",
        v1.tags.get("stage-hint") == "first",
        repr(v1.tags),
    )
    check(
        f"new version has tag {APPROVAL_TAG}={APPROVAL_PENDING}",
        v1.tags.get(APPROVAL_TAG) == APPROVAL_PENDING,
        repr(v1.tags),
    )

    v2 = client.create_model_version(
        name,
        source,
        tags={"stage-hint": "second"},
        description="version two",
        await_creation_for=0,
    )
    check("second create_model_version returns version '2'", v2.version == "2", repr(v2.version))
    check("second version status is READY", v2.status == "READY", repr(v2.status))
    check(
        f"second version has tag {APPROVAL_TAG}={APPROVAL_PENDING}",
        v2.tags.get(APPROVAL_TAG) == APPROVAL_PENDING,
        repr(v2.tags),
    )

    got = client.get_model_version(name, "1")
    check("get_model_version returns version 1", (got.name, got.version) == (name, "1"))
    check("get_model_version has the description", got.description == "version one")
    check("get_model_version has the source", got.source == source, repr(got.source))
    check(
        "get_model_version has the tags",
        got.tags.get("stage-hint") == "first" and got.tags.get(APPROVAL_TAG) == APPROVAL_PENDING,
        repr(got.tags),
    )
    check(
        "get_model_version creation_timestamp is epoch millis",
        isinstance(got.creation_timestamp, int) and got.creation_timestamp > 1_000_000_000_000,
        repr(got.creation_timestamp),
    )

    versions = client.search_model_versions(filter_string=f"name='{name}'")
    check(
        "search_model_versions name='...' returns both versions",
        sorted(v.version for v in versions) == ["1", "2"] and all(v.name == name for v in versions),
        repr([(v.name, v.version) for v in versions]),
    )

    mv = client.update_model_version(name, "1", description="version one, revised")
    check(
        "update_model_version returns the new description",
        mv.description == "version one, revised",
        repr(mv.description),
    )
    check(
        "get_model_version sees the new description",
        client.get_model_version(name, "1").description == "version one, revised",
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages API is deprecated client-side
        latest = client.get_latest_versions(name)
        latest_none = client.get_latest_versions(name, stages=["None"])
    check(
        "get_latest_versions returns version 2 as the latest",
        [v.version for v in latest] == ["2"],
        repr([(v.version, v.current_stage) for v in latest]),
    )
    check(
        "get_latest_versions(stages=['None']) returns version 2",
        [v.version for v in latest_none] == ["2"],
        repr([(v.version, v.current_stage) for v in latest_none]),
    )

    client.set_model_version_tag(name, "1", "validated", "true")
    tags = client.get_model_version(name, "1").tags
    check("set_model_version_tag is visible", tags.get("validated") == "true", repr(tags))
    client.delete_model_version_tag(name, "1", "validated")
    tags = client.get_model_version(name, "1").tags
    check(
        "delete_model_version_tag removes only that tag",
        "validated" not in tags and tags.get("stage-hint") == "first",
        repr(tags),
    )

    # ---- aliases ------------------------------------------------------------------
    client.set_registered_model_alias(name, "champion", "1")
    by_alias = client.get_model_version_by_alias(name, "champion")
    check(
        "get_model_version_by_alias returns the aliased version",
        (by_alias.name, by_alias.version) == (name, "1"),
        repr((by_alias.name, by_alias.version)),
    )
    check(
        "aliased version lists the alias",
        "champion" in by_alias.aliases,
        repr(by_alias.aliases),
    )
    aliases = client.get_registered_model(name).aliases
    check(
        "get_registered_model lists the alias",
        aliases.get("champion") == "1",
        repr(aliases),
    )
    client.delete_registered_model_alias(name, "champion")
    expect_mlflow_error(
        "get_model_version_by_alias of a deleted alias raises",
        lambda: client.get_model_version_by_alias(name, "champion"),
    )
    aliases = client.get_registered_model(name).aliases
    check("deleted alias is gone from the model", "champion" not in aliases, repr(aliases))

    # ---- download uri ---------------------------------------------------------------
    uri = client.get_model_version_download_uri(name, "1")
    check(
        "get_model_version_download_uri returns a non-empty string",
        isinstance(uri, str) and uri != "",
        repr(uri),
    )

    # ---- rename -------------------------------------------------------------------
    # MlflowClient.rename_registered_model returns None in current clients, so the
    # result is checked through get/search.
    client.rename_registered_model(name, renamed)
    created.append(renamed)
    check(
        "rename_registered_model: new name resolves",
        client.get_registered_model(renamed).name == renamed,
    )
    expect_mlflow_error(
        "rename_registered_model: old name no longer resolves",
        lambda: client.get_registered_model(name),
        "RESOURCE_DOES_NOT_EXIST",
    )
    versions = client.search_model_versions(filter_string=f"name='{renamed}'")
    check(
        "versions follow the renamed model",
        sorted(v.version for v in versions) == ["1", "2"]
        and all(v.name == renamed for v in versions),
        repr([(v.name, v.version) for v in versions]),
    )

    # ---- deletes ------------------------------------------------------------------
    client.delete_model_version(renamed, "2")
    expect_mlflow_error(
        "delete_model_version: deleted version is gone",
        lambda: client.get_model_version(renamed, "2"),
        "RESOURCE_DOES_NOT_EXIST",
    )
    versions = client.search_model_versions(filter_string=f"name='{renamed}'")
    check(
        "search_model_versions no longer lists the deleted version",
        [v.version for v in versions] == ["1"],
        repr([v.version for v in versions]),
    )

    client.delete_registered_model(renamed)
    expect_mlflow_error(
        "delete_registered_model: model is gone",
        lambda: client.get_registered_model(renamed),
        "RESOURCE_DOES_NOT_EXIST",
    )
    found = client.search_registered_models(filter_string=f"name = '{renamed}'")
    check("search_registered_models no longer finds the model", len(found) == 0, repr(found))
    expect_mlflow_error(
        "versions of a deleted model are gone",
        lambda: client.get_model_version(renamed, "1"),
        "RESOURCE_DOES_NOT_EXIST",
    )
    created.clear()


def cleanup(client, names):
    for n in names:
        try:
            client.delete_registered_model(n)
            print(f"note cleanup: deleted {n}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - best effort
            pass


def main():
    uri = require_env("MLFLOW_TRACKING_URI")
    require_env("MLFLOW_TRACKING_TOKEN")
    source = require_env("ATELIER_SOURCE_URI")
    prefix = os.environ.get("ATELIER_MODEL_PREFIX") or "mlflow-test"

    print(f"MLflow registry checks against {uri} (prefix {prefix!r})", flush=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    created = []
    try:
        run_checks(client, source, prefix, created)
    except CheckFailed as exc:
        print(f"FAIL {exc}", flush=True)
        cleanup(client, created)
        return 1
    except Exception as exc:  # noqa: BLE001 - any unexpected error is a failure
        traceback.print_exc()
        print(f"FAIL unexpected {type(exc).__name__}: {exc}", flush=True)
        cleanup(client, created)
        return 1
    print("PASS all MLflow registry checks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
