"""fetch: write data/raw/mnist.pkl.gz from the first source in params.yaml that verifies."""

import argparse

from mnist_pipeline.errors import stage_main


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="where to write mnist.pkl.gz")
    args = parser.parse_args()

    from mnist_pipeline.fetch import fetch
    from mnist_pipeline.params import load_params

    source = fetch(load_params(args.params).fetch, args.out)
    print(f"fetch: {args.out} verified, from {source.describe()}")


if __name__ == "__main__":
    main()
