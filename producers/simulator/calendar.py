"""The English school calendar of an academic year: term days, holidays, census days, London times."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
"""School systems keep London local time."""


def easter(year: int) -> date:
    """Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


class AcademicCalendar:
    """Term days of the academic year starting in September of `year` (typical English dates)."""

    def __init__(self, year: int) -> None:
        self.year = year
        self.first_day = _nth_weekday(year, 9, 2, 1)  # pupils start on the first Wednesday (two INSET days)
        if self.first_day.day < 3:
            self.first_day += timedelta(days=7)
        self.last_day = date(year + 1, 7, 22)
        good_friday = easter(year + 1) - timedelta(days=2)
        late_may = _nth_weekday(year + 1, 5, 0, 4)
        if (late_may + timedelta(days=7)).month == 5:
            late_may += timedelta(days=7)
        self._holidays: list[tuple[date, date]] = [
            (_monday(date(year, 10, 27)), _monday(date(year, 10, 27)) + timedelta(days=4)),
            (date(year, 12, 20), date(year + 1, 1, 4)),
            (_monday(date(year + 1, 2, 16)), _monday(date(year + 1, 2, 16)) + timedelta(days=4)),
            (_monday(good_friday), _monday(good_friday) + timedelta(days=11)),
            (_nth_weekday(year + 1, 5, 0, 1), _nth_weekday(year + 1, 5, 0, 1)),
            (late_may, late_may + timedelta(days=4)),
        ]
        # Half-term starts: when clubs, music and homework services send their termly registers.
        self.half_terms = [self.first_day] + [
            self.next_school_day(end + timedelta(days=1)) for start, end in self._holidays if end > start
        ]
        self.census_days = [
            _nth_weekday(year, 10, 3, 1),
            _nth_weekday(year + 1, 1, 3, 3),
            _nth_weekday(year + 1, 5, 3, 3),
        ]

    def is_school_day(self, day: date) -> bool:
        """A weekday in term (pupils in school)."""
        if day.weekday() >= 5 or day < self.first_day or day > self.last_day:
            return False
        return not any(start <= day <= end for start, end in self._holidays)

    def next_school_day(self, day: date) -> date:
        """`day` or the first school day after it (or the last day of the year)."""
        probe = day
        while not self.is_school_day(probe) and probe < self.last_day:
            probe += timedelta(days=1)
        return probe


def academic_year(day: date) -> int:
    """The calendar year in which the academic year containing `day` began."""
    return day.year if day.month >= 8 else day.year - 1


def at_london(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A London wall-clock time on `day` (minutes may run past 59), as an aware datetime."""
    return datetime.combine(day, time(0), tzinfo=LONDON) + timedelta(hours=hour, minutes=minute, seconds=second)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC."""
    return moment.astimezone(UTC)


def midnight(day: date) -> datetime:
    """The start of a London date (how date-only facts such as enrolment take effect)."""
    return at_london(day, 0)
