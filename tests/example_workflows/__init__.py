"""Workflows kept outside `assets/`, found through BOSUN_WORKFLOW_PACKAGES=example_workflows
(tests/orchestration/test_toy_workflow.py): what a team adding its own workflow writes."""
