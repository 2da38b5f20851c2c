"""``keyturn resolve NAME --retry | --abandon``: the way out of ``needs_attention``."""

from __future__ import annotations

import click

from rotation.cli import tasks
from rotation.cli.common import OpsCommand, make_console, open_runtime
from rotation.durations import format_duration, parse_duration
from rotation.names import validate_name
from rotation.run.steps import FAILED_RETRY_DELAY


@click.command("resolve", cls=OpsCommand)
@click.argument("name")
@click.option("--retry", is_flag=True, help="Resume the run where it stopped.")
@click.option("--abandon", is_flag=True, help="Roll the run back where safe; end it failed.")
@click.option(
    "--retry-after",
    default=format_duration(FAILED_RETRY_DELAY),
    show_default=True,
    metavar="DURATION",
    help="With --abandon: when the schedule tries NAME again (e.g. 1h, 7d).",
)
def resolve_command(name: str, retry: bool, abandon: bool, retry_after: str) -> None:
    """Resolve the run of secret NAME that needs attention (needs the rotate permission).

    --retry resumes it from the step it stopped at (before promotion: from apply, with its
    staged value; a run whose work was rolled back starts over with a new token) and sends it
    to the workers. --abandon rolls it back where safe (as a failing step would) and ends it
    failed, freeing the secret for the next rotation. Both are recorded in the run's history
    and the audit trail. See docs/operations.md for what to check before each.

    \b
    Examples:
      keyturn resolve db_credentials --retry
      keyturn resolve api_key_ncbi --abandon --retry-after 7d
    """
    if retry == abandon:
        raise click.UsageError("say what to do: either --retry or --abandon")
    action = "retry" if retry else "abandon"
    validate_name(name)
    try:
        delay = parse_duration(retry_after)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retry-after") from None
    console = make_console()
    args = {"secret": name, "how": action, "retry_after_seconds": delay.total_seconds()}
    with open_runtime() as runtime:
        (done,) = tasks.request("resolve", args, runtime.clock())["runs"]
    if action == "retry":
        console.print(
            f"retrying run {done['run_id']} of {name} (stopped in {done['from_state']}): "
            f"{done['note']}"
        )
        return
    console.print(
        f"abandoned run {done['run_id']} of {name} ({done['from_state']} -> failed): {done['note']}"
    )
