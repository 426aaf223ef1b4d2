"""The tables of an HTML page as text: what the report's views show (tests/test_report.py,
tests/test_summary.py)."""

from html.parser import HTMLParser


class Cells(HTMLParser):
    """Rows of cell texts (th and td) and the classes of the rows, from an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.classes, self.cell, self.scripts = [], [], None, 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
            self.classes.append(dict(attrs).get("class"))
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag in ("script", "link", "img", "iframe"):
            self.scripts += 1

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None
