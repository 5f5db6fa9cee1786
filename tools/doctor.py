"""tfod-doctor: print the stack tfod runs on and exit non-zero when it cannot work.

tfod-doctor            # the full table
tfod-doctor --quiet    # print only problems (used by `make venv`)
"""

import sys

from absl import flags

from tfod import cli, doctor

_QUIET = flags.DEFINE_bool("quiet", False, "Print only the checks that fail.")


def main(argv):
    del argv  # checked by cli.runner
    checks = doctor.run_checks()
    failed = [c for c in checks if not c.ok]
    shown = failed if _QUIET.value else checks
    if shown:
        print(doctor.format_report(shown))
    if failed:
        print(
            f"\ntfod-doctor: {len(failed)} problem(s); tfod cannot run on this stack.",
            file=sys.stderr,
        )
        return 1
    return 0


run = cli.runner(main)

if __name__ == "__main__":
    run()
