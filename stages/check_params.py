"""check_params: validate all of params.yaml, so a misspelled `-S` key fails the run loudly."""

import argparse

from mnist_pipeline.errors import stage_main


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args()

    from mnist_pipeline.params import load_params

    params = load_params(args.params)
    print(f"check_params: {args.params} is valid ({len(params.models)} models)")


if __name__ == "__main__":
    main()
