"""Entry point of the Dataflow Flex Template: the launcher runs this file with the template's parameters
as flags (see configs/flex-template.json)."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
