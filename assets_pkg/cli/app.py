"""The `drop-studio` command group and its one-line errors; each command group is a module beside this one.

Heavy modules (Dagster, torch, pymilvus) are imported by the commands that need them, so `--help` and bad
arguments answer at once.
"""

from __future__ import annotations

import click

from ..domain.store.rows import MAX_TOP_K

class CliError(click.ClickException):
    """A one-line error: printed as `drop-studio: error: ...`, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"drop-studio: error: {self.message}", err=True)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context):
        from assets_pkg.domain.errors import StudioError

        try:
            return super().invoke(ctx)
        except StudioError as e:  # a stage's or a setting's one-line error
            raise CliError(str(e)) from None
        except click.UsageError as e:  # a bad option of a command: one line too, not the usage text
            raise CliError(e.format_message()) from None


TOP_K = click.IntRange(1, MAX_TOP_K)  # hits of one search, as the page and briefs allow


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Product drops -> CLIP -> Milvus -> campaign images."""


def still_on_serving(models) -> str:
    """The line the CLI says while a change of model is being built."""
    return (f"search answers from {models.serving.id} until every drop is built for {models.target.id} "
            f"(drop-studio models)")


def quiet(log_level: str = "CRITICAL") -> dict:
    """Run config: Dagster's console log at `log_level` (the CLI prints its own lines)."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}
