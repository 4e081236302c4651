"""Building blocks shared by the command modules' parsers (``mmtlab <group> <task>``)."""

from __future__ import annotations

import argparse


def task_parser(subparsers, group: str, group_help: str, task: str, task_help: str, epilog: str):
    """The parser of ``mmtlab GROUP TASK`` (e.g. ``eval retrieval``): the group's parser with a required TASK, and
    the task's, whose ``epilog`` (usage examples) is printed as written."""
    grp = subparsers.add_parser(group, help=group_help)
    tasks = grp.add_subparsers(dest=f"{group}_command", metavar="TASK", required=True)
    return tasks.add_parser(task, help=task_help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
