"""The runs page: the same filters as the API in a GET form, sort links, next page, CSV of what is shown."""

import csv
import io
import re

import pytest
from django.test import Client

from streams.models import Run

pytestmark = pytest.mark.django_db


def make(owner, text="hello", **fields):
    return Run.objects.create(owner=owner, provider="simulator", model=fields.pop("model", "sim-text"),
                              request={"input": text}, **fields)


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def shown(html):
    return [int(n) for n in re.findall(r'data-run-row="(\d+)"', html)]


def test_filters_search_and_sort_come_from_the_url(user):
    a = make(user, text="blue sky", ttft_ms=300.0, model="m1")
    b = make(user, text="blue sea", ttft_ms=100.0, model="m1")
    make(user, text="red sky", ttft_ms=200.0, model="m2")
    client = client_for(user)
    html = client.get("/runs/?q=blue&model=m1&sort=ttft_ms").content.decode()
    assert shown(html) == [b.pk, a.pk]
    assert 'value="blue"' in html  # the form shows the state it was given
    assert 'data-sort-link="ttft_ms"' in html and "sort=-ttft_ms" in html  # the heading flips the order
    assert "First token" in html and "first output-text delta" in html  # hover help from DEFINITIONS


def test_next_page_link_walks_every_run_once(user):
    made = {make(user).pk for _ in range(7)}
    client = client_for(user)
    seen, url = [], "/runs/?limit=3"
    while url:
        html = client.get(url).content.decode()
        seen += shown(html)
        match = re.search(r'href="([^"]+)" data-next-page', html)
        url = "/runs/" + match.group(1).replace("&amp;", "&") if match else None
    assert sorted(seen) == sorted(made) and len(seen) == 7


def test_csv_exports_the_rows_shown(user):
    make(user, text="=HYPERLINK(\"x\")", ttft_ms=12.0, model="m1")
    make(user, model="m2")
    answer = client_for(user).get("/runs/?model=m1&format=csv")
    assert answer["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert len(rows) == 1 and rows[0]["model"] == "m1" and rows[0]["ttft_ms"] == "12.0"
    assert rows[0]["input"].startswith("'=")  # no formulas in a spreadsheet


def test_bad_values_say_which_and_others_runs_stay_hidden(user, other_user):
    theirs = make(other_user, text="secret")
    client = client_for(user)
    answer = client.get("/runs/?sort=owner")
    assert answer.status_code == 400 and "sort must be one of" in answer.content.decode()
    assert theirs.pk not in shown(client.get("/runs/?q=secret&all=1").content.decode())
    assert theirs.pk not in shown(client.get(f"/runs/?owner={other_user.username}").content.decode())


def test_staff_filter_by_owner(user, staff_user):
    theirs = make(user, text="x")
    make(staff_user)
    html = client_for(staff_user).get(f"/runs/?owner={user.username}").content.decode()
    assert shown(html) == [theirs.pk] and 'name="owner"' in html
