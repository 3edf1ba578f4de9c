"""check_params: validate all of params.yaml, so a misspelled `-S` key fails the run loudly.

With --out, a valid file also writes a stamp whose bytes never change. The train stages depend
on it, so DVC runs this check before any of them, even for `dvc repro train@<name>`: a model
name is checked here before dvc.yaml's ${key} puts it into a shell command.
"""

import argparse

from mnist_pipeline.atomic import write_text
from mnist_pipeline.errors import stage_main
from mnist_pipeline.params import load_params

STAMP = "params.yaml passed check_params (these bytes never change)\n"


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--out", help="the stamp written when the file is valid")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.out:
        write_text(args.out, STAMP)
    print(f"check_params: {args.params} is valid ({len(params.models)} models)")


if __name__ == "__main__":
    main()
