"""Nightly incremental catalog job: an Airflow DAG that launches the Toonbeam Flex Template.

Each run writes to its own folder and reads the reports of every earlier run, so only new or changed
photos (and changed settings) are computed; units already done are reported as "skipped" with the
earlier image's URI. Set the Airflow Variables toonbeam_project, toonbeam_region, toonbeam_bucket and
toonbeam_template (the gs:// path of the built configs/flex-template.json).
"""
import pendulum
from airflow import DAG
from airflow.models import Variable
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

BUCKET = "{{ var.value.toonbeam_bucket }}"

with DAG(
    dag_id="toonbeam_catalog",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # a run must finish before the next one reads its report
    tags=["toonbeam"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="cartoonize_catalog",
        project_id=Variable.get("toonbeam_project", default_var=None),
        location=Variable.get("toonbeam_region", default_var="us-central1"),
        body={
            "launchParameter": {
                "jobName": "toonbeam-{{ ds_nodash }}",
                "containerSpecGcsPath": "{{ var.value.toonbeam_template }}",
                "parameters": {
                    "content": f"gs://{BUCKET}/catalog/photos.parquet",
                    "style": f"gs://{BUCKET}/catalog/styles/",
                    "method": "nst",
                    "output": f"gs://{BUCKET}/toonbeam/runs/{{{{ ts_nodash }}}}",
                    "incremental": f"gs://{BUCKET}/toonbeam/runs/*/report/*.parquet",
                },
            }
        },
        wait_until_finished=True,
    )
