"""The demo: python -m demo.run_demo from the repository root (make demo); demo/mysite is the Django site gunicorn serves."""
