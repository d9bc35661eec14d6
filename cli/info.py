"""mamol-info: what a model file expects (modalities, bands, classes), read without loading torch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from mamol_cli.common import handle_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mamol")
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole embedded config as JSON.")
@handle_errors
def main(model_path, as_json):
    """Describe MODEL_PATH: modalities with band counts, classes, backbone and protocol."""
    from mamol_core.modelfile.header import read_config

    config = read_config(model_path)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(config), indent=1))
        return
    model = config.model
    click.echo(f"mamol model {model.name or model_path.stem!r}: {model_path} (mamol {config.mamol_version}, format {config.format_version})")
    click.echo("modalities: " + ", ".join(f"{m.name} ({m.bands} band{'' if m.bands == 1 else 's'})" for m in model.modalities))
    click.echo("classes: " + ", ".join(f"{c.value}={c.name}" for c in model.classes))
    click.echo(f"backbone: {model.backbone.name}; experts: {model.experts.method}, {model.experts.placement} "
               f"{model.experts.num_layers} blocks, rank {model.experts.rank}; tiles of {model.layout.patch_size} px, "
               f"tokens of {model.layout.token_size} px, {model.layout.encoding} encoding")
    click.echo(f"trained with missing rate {config.protocol.missing_rate:g}, missing {config.protocol.missing}")
    if model.grid is not None:
        click.echo(f"training grid: {model.grid.crs or 'no CRS'}, pixel {model.grid.pixel_size[0]:g} x {model.grid.pixel_size[1]:g} "
                   "(mamol-map maps at this pixel size unless --reference is given)")
    else:
        click.echo("training grid: not recorded (an older model file); mamol-map uses the finest input's grid")


if __name__ == "__main__":
    main()
