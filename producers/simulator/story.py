"""The school year, day by day: what each school system sends where, with violations injected at a rate.

Routine flows are built to be lawful under RULES.md (the schools only rely on consents they hold, stop syncing
leavers, send reports to a parent no court order bars...). An injected violation changes one routine flow the
way a real mistake would (a pupil without permission in a newsletter photo, an unregistered app in a sync) and
is recorded with the reason code the pipeline should lead with.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from producers.simulator.calendar import AcademicCalendar, academic_year, at_london, utc
from producers.simulator.config import SimConfig
from producers.simulator.consents import ConsentPlan, absent, holds, unauthorised, withdrawn
from producers.simulator.formats import (
    CONSENT_HEADER,
    MAILTRACE_HEADER,
    MIS_HEADER,
    SYNCLOG_HEADER,
    CsvFile,
    CtfFile,
    Formats,
)
from producers.simulator.outbox import Drop, FileDrop, HttpEvent, Mark
from producers.simulator.population import (
    HAWTHORN,
    LAESTAB,
    OTHER_SCHOOLS,
    ROSE_VALLEY,
    Population,
    Pupil,
    build_population,
)
from producers.simulator.truth import Injector, Violation
from schemas.connector_maps import ConnectorMaps
from schemas.events import (
    CompetenceAssessed,
    ConsentGiven,
    ConsentWithdrawn,
    CourtOrderNotified,
    DataFlow,
    EventEnvelope,
    NoticeVersionPublished,
    SharingAgreement,
)

V = Violation
SCHOOLS = (HAWTHORN, ROSE_VALLEY)
DOMAINS = {HAWTHORN: "hawthornprimary.org.uk", ROSE_VALLEY: "rosevalley.org.uk"}
AGREEMENTS = [
    ("sims", "art28_contract"),
    ("cpoms", "art28_contract"),
    ("parentpay", "art28_contract"),
    ("cool-milk", "art28_contract"),
    ("meal-provider", "art28_contract"),
    ("mathsquest", "art28_contract"),
    ("quizcloud", "art28_contract"),
    ("edtech-software", "art28_contract"),
    ("biometric-catering", "art28_contract"),
    ("school-photographer", "art28_contract"),
    ("peripatetic-music", "dsa"),
    ("after-school-club", "dsa"),
    ("homework-hub", "dsa"),
    ("school-nurse", "dsa"),
    ("sais", "dsa"),
    ("insurers", "engagement_terms"),
]
"""The sharing agreements of the simulated Trust: (recipient, agreement type)."""
CPOMS = ["upn", "forename", "surname", "year_group", "behaviour_points", "sen_status", "attendance"]
PARENTPAY = ["upn", "forename", "surname", "year_group", "parent_name", "parent_email", "meal_choice", "balance"]
MEALS = ["forename", "surname", "class", "school", "allergies", "meal_choice"]
EDTECH = ["forename", "surname", "class", "username"]
TTRS = ["forename", "surname", "class", "upn", "username", "assessment_results"]
MILK = ["forename", "surname", "dob", "class", "school"]


TIME_COLUMNS = ("submitted_at", "timestamp", "time", "exported_at")
"""The time column of each CSV export the simulator writes (the one a malformed record garbles)."""


class Story:
    """Builds every drop of the run (files and HTTP events) and the injected violations inside them."""

    def __init__(self, cfg: SimConfig, maps: ConnectorMaps) -> None:
        self.cfg = cfg
        self.start = cfg.start
        self.end = cfg.start + timedelta(days=cfg.day_count - 1)
        self.rng = random.Random(f"pupilflow-sim:{cfg.seed}:story")
        self.cal = AcademicCalendar(academic_year(cfg.start))
        sizes = {HAWTHORN: cfg.pupils_hawthorn, ROSE_VALLEY: cfg.pupils_rose_valley}
        self.pop: Population = build_population(
            random.Random(f"pupilflow-sim:{cfg.seed}:population"), cfg.start, cfg.day_count, sizes
        )
        self.competent = {p.id for p in self.pop.pupils if p.age_on(self.start) >= 16 and not p.joins_midyear}
        self.plan = ConsentPlan(
            random.Random(f"pupilflow-sim:{cfg.seed}:consents"), self.pop, self.start, self.end, self.competent
        )
        self.fmt = Formats(maps)
        self.maps = maps
        self.inj = Injector(random.Random(f"pupilflow-sim:{cfg.seed}:inject"), cfg.violation_rate, cfg.cover_all_codes)
        self.drops: list[Drop] = []
        # Its own stream, so asking for malformed records never changes the rest of a seed's year.
        self._garble = random.Random(f"pupilflow-sim:{cfg.seed}:malformed")
        self.malformed: list[dict[str, Any]] = []
        self._ids = 0
        self._files = 0
        # Parents' marketing opt-ins: contact id -> (opted in on, opted out on).
        self.marketing: dict[str, tuple[date, date | None]] = {}

    # -- emitting -----------------------------------------------------------------------------------------

    def _http(self, at: datetime, model: type[EventEnvelope], fields: dict[str, Any], mark: V | None = None) -> str:
        self._ids += 1
        event_id = f"sim-{self.cfg.seed}-{self._ids:07d}"
        self.drops.append(HttpEvent(utc(at), event_id, model, fields, mark))
        return event_id

    def flow(self, when: datetime, mark: V | None = None, **fields: Any) -> None:
        """A flow posted over HTTP two minutes after it happened."""
        subjects = fields.pop("subjects")
        fields["subjects"] = [s if isinstance(s, dict) else {"kind": "pupil", "id": s} for s in subjects]
        fields.setdefault("record_count", len(subjects))
        self._http(when + timedelta(minutes=2), DataFlow, {"occurred_at": utc(when), **fields}, mark)

    def _file(self, at: datetime, file: CsvFile, marks: list[Mark]) -> None:
        if file.rows:
            if self.cfg.malformed_rate and self._garble.random() < self.cfg.malformed_rate:
                self._malform(file)
            self.drops.append(FileDrop(utc(at), file.connector, file.name, file.render(), file.intended, marks))

    def _malform(self, file: CsvFile) -> None:
        """Append a copy of one row with its time garbled: a record the connector must dead-letter."""
        column = next(c for c in file.header if c in TIME_COLUMNS)
        row = dict(zip(file.header, file.rows[self._garble.randrange(len(file.rows))], strict=True))
        row[column] = "31/09/2025 25:61"
        record = file.add(row, ())
        self.malformed.append({"connector": file.connector, "file": file.name, "record": record, "column": column})

    def _name(self, day: date, what: str, ext: str = "csv") -> str:
        self._files += 1
        return f"{day.isoformat()}-{self._files:05d}-{what}.{ext}"

    def active(self, school: str, day: date) -> list[Pupil]:
        """Pupils on roll whose MIS record has been exported."""
        return self.pop.at(school, day)

    # -- the year -----------------------------------------------------------------------------------------

    def run(self) -> list[Drop]:
        """Every drop of the run, in the order they were made (sort by time for arrival order)."""
        self._setup()
        day = self.start
        while day <= self.end:
            self._day(day)
            day += timedelta(days=1)
        return self.drops

    def _setup(self) -> None:
        at = at_london(self.start, 5)
        self._http(
            at, NoticeVersionPublished, {"occurred_at": datetime(2019, 6, 1, tzinfo=at.tzinfo), "version": "1.0"}
        )
        signed = at_london(self.start - timedelta(days=17), 10)
        until = at_london(self.start + timedelta(days=3 * 365), 23, 59)
        for recipient, kind in AGREEMENTS:
            self._http(
                at,
                SharingAgreement,
                {
                    "occurred_at": signed,
                    "agreement_id": f"agr-{recipient}-{self.start.year}",
                    "recipient": recipient,
                    "agreement_type": kind,
                    "valid_from": signed,
                    "valid_until": until,
                },
            )
        # The former ICT contractor's Art 28 contract ran out the day before the year began.
        old = at_london(self.start - timedelta(days=3 * 365), 10)
        self._http(
            at,
            SharingAgreement,
            {
                "occurred_at": old,
                "agreement_id": "agr-ict-support-old",
                "recipient": "ict-support",
                "agreement_type": "art28_contract",
                "valid_from": old,
                "valid_until": at_london(self.start - timedelta(days=1), 23, 59),
            },
        )
        exported = at_london(self.start, 6)
        mis = CsvFile("mis", self._name(self.start, "mis-full"), MIS_HEADER)
        for pupil in self.pop.pupils:
            if not pupil.joins_midyear:
                self.fmt.mis_rows(mis, exported, pupil)
        self._file(exported, mis, [])
        for pupil in self.pop.pupils:
            if pupil.id in self.competent:
                self._http(
                    at_london(self.start, 8, 30),
                    CompetenceAssessed,
                    {
                        "occurred_at": at_london(self.start, 8),
                        "subject": {"kind": "pupil", "id": pupil.id},
                        "assessment_id": f"comp-{pupil.id}",
                        "competent": True,
                        "assessed_by": "dsl-rose-valley",
                    },
                )
        for pupil in self.pop.pupils:
            for contact in pupil.contacts:
                if not contact.marketing_opt_in:
                    continue
                first = pupil.enrolled_on if pupil.joins_midyear else self.start
                given = first + timedelta(days=self.rng.randrange(1, 15))
                if given > self.end:
                    continue
                out = None
                span = (self.end - given).days
                if span > 40 and self.rng.random() < 0.06:
                    out = given + timedelta(days=self.rng.randrange(20, span - 10))
                self.marketing[contact.id] = (given, out)
                person = {"id": contact.id, "relationship": "self"}
                subject = {"kind": "parent", "id": contact.id}
                when = at_london(given, 20, self.rng.randrange(0, 59))
                self._http(
                    when,
                    ConsentGiven,
                    {
                        "occurred_at": when,
                        "subject": subject,
                        "consent_id": f"mkt-{contact.id}",
                        "given_by": person,
                        "scope": {
                            "recipient": "trust-marketing",
                            "purpose": "marketing",
                            "categories": ["parent_contact", "identity.name"],
                        },
                        "method": "parent_app",
                    },
                )
                if out is not None:
                    when = at_london(out, 21, 0)
                    self._http(
                        when,
                        ConsentWithdrawn,
                        {
                            "occurred_at": when,
                            "subject": subject,
                            "consent_id": f"mkt-{contact.id}",
                            "withdrawn_by": person,
                            "method": "unsubscribe_link",
                        },
                    )

    def _day(self, day: date) -> None:
        self._consent_export(day)
        self._mis_delta(day)
        for pupil in self.pop.pupils:
            if pupil.court_order == day:
                self._court_order(pupil, day)
            # A mid-year leaver's CTF follows a few days after they go (the summer's go in July, in bulk).
            midyear = pupil.left_on is not None and pupil.left_on < self.cal.last_day and pupil.destination
            if midyear and pupil.left_on and day == self.cal.next_school_day(pupil.left_on + timedelta(days=3)):
                self._ctf(day, pupil.school, str(pupil.destination), [pupil])
        if not self.cal.is_school_day(day):
            return
        mails = CsvFile("mailtrace", self._name(day, "mailtrace"), MAILTRACE_HEADER)
        mail_marks: list[Mark] = []
        for school in SCHOOLS:
            self._syncs(day, school)
            self._mail(day, school, mails, mail_marks)
            self._occasional(day, school)
            self._termly(day, school)
        self._file(at_london(day, 23, 30), mails, mail_marks)
        self._marketing(day)
        if day == self.cal.next_school_day(date(self.cal.year + 1, 7, 8)):
            self._year6_ctfs(day)

    # -- facts --------------------------------------------------------------------------------------------

    def _consent_export(self, day: date) -> None:
        forms = sorted(self.plan.forms.get(day - timedelta(days=1), []), key=lambda f: (f.when, f.values["form_id"]))
        if not forms:
            return
        file = CsvFile("consent", self._name(day, "consent-forms"), CONSENT_HEADER)
        for form in forms:
            v = dict(form.values)
            v.pop("when")
            self.fmt.consent_row(file, form_id=v.pop("form_id"), when=form.when, **v)
        self._file(at_london(day, 6, 30), file, [])

    def _mis_delta(self, day: date) -> None:
        changed = [p for p in self.pop.pupils if (p.joins_midyear and p.enrolled_on == day) or p.left_on == day]
        if not changed or day == self.start:
            return
        exported = at_london(day, 7)
        file = CsvFile("mis", self._name(day, "mis-changes"), MIS_HEADER)
        for pupil in changed:
            self.fmt.mis_rows(file, exported, pupil)
        self._file(exported, file, [])

    def _court_order(self, pupil: Pupil, day: date) -> None:
        father = next(c for c in pupil.contacts if c.relationship == "father" and c.pr)
        notified = at_london(day, 11)
        self._http(
            notified + timedelta(minutes=5),
            CourtOrderNotified,
            {
                "occurred_at": notified,
                "subject": {"kind": "pupil", "id": pupil.id},
                "order_id": f"PSO-{pupil.id}",
                "order_type": "prohibited_steps",
                "made_at": notified - timedelta(days=4),
                "trust_notified_at": notified,
                "restricted_person_ids": [father.id],
            },
        )

    # -- file-borne flows ---------------------------------------------------------------------------------

    def _syncs(self, day: date, school: str) -> None:
        roll = self.active(school, day)
        rows: list[tuple[str, list[Pupil], list[str], str]] = [
            ("CPOMS", roll, CPOMS, "cpoms"),
            ("ParentPay", roll, PARENTPAY, "parentpay"),
            ("School Meals Co", roll, MEALS, "meals"),
        ]
        if school == HAWTHORN:
            rows += [
                ("MathsQuest", [p for p in roll if p.year_group in ("3", "4", "5", "6")], EDTECH, "edtech"),
                (
                    "Times Tables Rock Stars",
                    [p for p in roll if p.year_group in ("2", "3", "4", "5", "6")],
                    TTRS,
                    "edtech",
                ),
                ("Cool Milk", [p for p in roll if p.year_group in ("N", "R")], MILK, "milk"),
                ("Cool Milk", [p for p in roll if p.fsm and p.age_on(day) >= 5], [*MILK, "fsm"], "milk-fsm"),
            ]
        else:
            rows.append(("MathsQuest", [p for p in roll if p.year_group in ("7", "8", "9")], EDTECH, "edtech"))
        leavers = [
            p
            for p in self.pop.pupils
            if p.school == school
            and p.left_on
            and p.left_on <= day - timedelta(days=31)
            and p.destination not in SCHOOLS
        ]
        file = CsvFile("synclog", self._name(day, f"sync-{school}"), SYNCLOG_HEADER)
        marks: list[Mark] = []
        when = at_london(day, 18)
        for supplier, pupils, fields, tag in rows:
            if not pupils:
                continue
            options = [
                V("UNKNOWN_RECIPIENT", "MIS sync to an app the Trust never registered (ClassDojo)"),
                V("INTERNATIONAL_TRANSFER_WITHOUT_SAFEGUARD", "sync to QuizCloud, US-hosted with no DPF or IDTA"),
                V("NO_SHARING_AGREEMENT", "sync to GL Assessment, which has no Art 28 contract"),
                V("CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "an unmapped MIS field ('notes') added to a sync"),
            ]
            if tag == "parentpay":
                options.append(
                    V("CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "medical conditions added to the ParentPay sync")
                )
                if leavers:
                    options.append(
                        V("RETENTION_EXCEEDED", "a pupil who left over 30 days ago still synced to ParentPay")
                    )
            if tag == "milk" and any(p.age_on(day) < 5 for p in pupils):
                options.append(V("CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "FSM flag sent to Cool Milk for under-5s"))
            pick = self.inj.pick("sync", options)
            ids = [p.id for p in pupils]
            if pick is not None:
                text = pick.description
                if "ClassDojo" in text:
                    supplier = "ClassDojo"
                elif "QuizCloud" in text:
                    supplier, fields = "QuizCloud", EDTECH
                elif "GL Assessment" in text:
                    supplier, fields = "GL Assessment", ["forename", "surname", "class", "upn", "assessment_results"]
                elif "'notes'" in text:
                    fields = [*fields, "notes"]
                elif "medical" in text:
                    fields = [*fields, "medical_conditions"]
                elif "FSM" in text:
                    fields = [*fields, "fsm"]
                else:
                    ids = [*ids, self.rng.choice(leavers).id]
            self._files += 1
            # The seed in the MIS's run id keeps two seeds' exports apart (a connector skips a file it has seen).
            record = self.fmt.sync_row(file, when, supplier, ids, fields, f"sync-{self.cfg.seed}-{self._files}")
            if pick is not None:
                marks.append(Mark(pick, record))
        self._file(at_london(day, 23), file, marks)

    def _mail(self, day: date, school: str, file: CsvFile, marks: list[Mark]) -> None:
        roll = self.active(school, day)
        if not roll:
            return
        domain = DOMAINS[school]
        for _ in range(self.rng.randrange(1, 5)):
            pupil = self.rng.choice(roll)
            kind = self.rng.choice(["internal", "general", "la", "nurse", "parentpay"])
            when = at_london(day, self.rng.randrange(8, 17), self.rng.randrange(0, 60))
            self._ids += 1
            message_id = f"msg-{self.cfg.seed}-{self._ids}"
            sender = f"office@{domain}"
            subject, attachments = f"Pupil {pupil.id}", [f"{pupil.id}-notes.pdf"]
            label = "Confidential - Pupil"
            to = [f"head@{domain}", "dpo@roselearningtrust.org.uk"]
            if kind == "general":
                to, subject, attachments, label = ["events@westshire.gov.uk"], "Sports day timetable", [], "General"
            elif kind == "la" and pupil.sen:
                to, subject, label = ["sen.team@westshire.gov.uk"], f"EHCP review {pupil.id}", "Confidential - SEN"
            elif kind == "nurse":
                to, subject, label = ["referrals@schoolnursing.nhs.uk"], f"Care plan {pupil.id}", "Medical"
            elif kind == "parentpay":
                to, subject, label = ["support@parentpay.com"], f"Account query {pupil.id}", "Personal"
            pick = None
            if label not in ("General",) and to[0].split("@")[1] not in (domain, "roselearningtrust.org.uk"):
                options = [
                    V("UNKNOWN_RECIPIENT", "pupil data emailed to a personal gmail.com address"),
                    V("CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "pupil data emailed without a sensitivity label"),
                ]
                if kind == "parentpay":
                    options.append(V("CATEGORY_NOT_PERMITTED_FOR_RECIPIENT", "medical details emailed to ParentPay"))
                pick = self.inj.pick("mail", options)
                if pick is not None:
                    if "gmail" in pick.description:
                        to, label = [f"{pupil.forename.lower()}.teacher@gmail.com"], "Confidential - Pupil"
                    elif "without" in pick.description:
                        label = ""
                    else:
                        label = "Medical"
            record = self.fmt.mail_row(file, when, message_id, sender, to, subject, attachments, label)
            if pick is not None:
                marks.append(Mark(pick, record))

    def _ctf(self, day: date, school: str, destination: str, pupils: list[Pupil]) -> None:
        written = at_london(day, 10)
        internal = destination in SCHOOLS
        dest = LAESTAB[destination] if internal else OTHER_SCHOOLS[destination]
        ctf = CtfFile(
            self._name(day, f"ctf-{LAESTAB[school]}-{dest}", "xml"),
            LAESTAB[school],
            dest,
            destination,
            written,
            pupils,
            internal,
        )
        self.drops.append(FileDrop(utc(written), "ctf", ctf.name, ctf.render(), [ctf.intended(self.maps)], []))

    def _year6_ctfs(self, day: date) -> None:
        leaving = [p for p in self.active(HAWTHORN, day) if p.year_group == "6" and p.destination]
        for destination in sorted({p.destination for p in leaving if p.destination}):
            self._ctf(day, HAWTHORN, destination, [p for p in leaving if p.destination == destination])

    # -- HTTP flows ---------------------------------------------------------------------------------------

    def _occasional(self, day: date, school: str) -> None:
        roll = self.active(school, day)
        if not roll:
            return
        rng = self.rng
        scale = len(roll) / 150
        if rng.random() < 0.12 * scale:
            self._referral(day, rng.choice(roll))
        sen = [p for p in roll if p.sen]
        if sen and rng.random() < 0.08 * scale:
            pupil = rng.choice(sen)
            pick = self.inj.pick("ehcp", [V("INSECURE_CHANNEL", "EHCP review sent to the LA by ordinary email")])
            self.flow(
                at_london(day, 14),
                pick,
                recipient="local-authority",
                purpose="sen_ehcp",
                categories=["identity", "sen.ehcp"],
                subjects=[pupil.id],
                lawful_basis="legal_obligation",
                condition="statutory_purposes_para6",
                channel="email" if pick else "encrypted_portal",
            )
        if rng.random() < 0.05 * scale:
            self._police(day, rng.choice(roll), roll)
        if rng.random() < 0.05 * scale:
            self._sar(day, rng.choice(roll))
        if rng.random() < 0.04 * scale:
            self._cctv(day, rng.choice(roll))
        if day.weekday() == 1:
            pick = self.inj.pick(
                "support",
                [V("AGREEMENT_EXPIRED", "MIS support by the former ICT contractor, whose Art 28 contract had expired")],
            )
            self.flow(
                at_london(day, 15),
                pick,
                recipient="ict-support" if pick else "sims",
                purpose="mis_sync",
                categories=["identity", "attendance"],
                subjects=[rng.choice(roll).id],
                channel="encrypted_api",
            )
        allergic = [p for p in roll if p.allergy]
        if allergic and rng.random() < 0.01:
            self.flow(
                at_london(day, 12, 40),
                recipient="ambulance-service",
                purpose="emergency_care",
                categories=["identity", "health.allergy"],
                subjects=[rng.choice(allergic).id],
                emergency=True,
                channel="in_person_handover",
            )
        if day.weekday() == 4:
            self._photos(day, school, roll)

    def _referral(self, day: date, pupil: Pupil) -> None:
        pick = self.inj.pick("referral", [V("INSECURE_CHANNEL", "safeguarding referral sent by ordinary email")])
        self.flow(
            at_london(day, 13),
            pick,
            recipient="children-social-care",
            purpose="safeguarding",
            categories=["identity", "parent_contact", "safeguarding"],
            subjects=[pupil.id],
            lawful_basis="public_task",
            condition="safeguarding_para18",
            channel="email" if pick else "encrypted_portal",
        )

    def _police(self, day: date, pupil: Pupil, roll: list[Pupil]) -> None:
        pick = self.inj.pick(
            "police",
            [
                V("LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS", "attendance given to a constable on a verbal request"),
                V(
                    "CATEGORY_NOT_PERMITTED_FOR_RECIPIENT",
                    "police request for one pupil answered with classmates' records",
                ),
                V(
                    "CRIMINAL_DATA_WITHOUT_CONDITION",
                    "a caution disclosed to police citing explicit consent as the condition",
                ),
            ],
        )
        request: dict[str, Any] = {
            "requester": "pc-4471",
            "authority": "written_sch2_para2",
            "reference": f"SCH2-{day:%Y%m%d}-{pupil.id[-4:]}",
            "signed_by_inspector_or_above": True,
            "names_person": True,
            "names_incident": True,
            "named_subject_ids": [pupil.id],
        }
        subjects, categories, extra = [pupil.id], ["identity", "attendance"], {}
        if pick is not None and pick.reason == "LAW_ENFORCEMENT_REQUEST_WITHOUT_BASIS":
            request = {"requester": "pc-4471", "authority": "verbal"}
        elif pick is not None and pick.reason == "CATEGORY_NOT_PERMITTED_FOR_RECIPIENT":
            mates = [p.id for p in roll if p.year_group == pupil.year_group and p.id != pupil.id][:3]
            subjects += mates or [next(p.id for p in roll if p.id != pupil.id)]
        elif pick is not None:
            categories, extra = ["identity", "criminal.caution"], {"condition": "explicit_consent"}
        self.flow(
            at_london(day, 11),
            pick,
            recipient="police:westshire",
            purpose="law_enforcement",
            categories=categories,
            subjects=subjects,
            channel="encrypted_email",
            request=request,
            **extra,
        )

    def _sar(self, day: date, pupil: Pupil) -> None:
        parent = pupil.parent_with_pr()
        if parent is None:
            return
        pick = self.inj.pick(
            "sar",
            [
                V("HARMFUL_DISCLOSURE", "child-abuse records disclosed to a parent in answer to a SAR"),
                V("REQUESTER_NOT_ENTITLED", "SAR answered for a father without parental responsibility"),
            ],
        )
        categories = ["identity", "assessment", "attendance", "behaviour"]
        request: dict[str, Any] = {
            "requester": parent.id,
            "relationship": parent.relationship,
            "has_parental_responsibility": True,
            "authority": "subject_access",
            "authorised_by_pupil": pupil.age_on(day) >= 13,
        }
        extra: dict[str, Any] = {}
        if pick is not None and pick.reason == "HARMFUL_DISCLOSURE":
            categories, extra = [*categories, "safeguarding"], {"contains_child_abuse_data": True}
        elif pick is not None:
            request = {
                "requester": f"{pupil.id}-absent-father",
                "relationship": "father",
                "has_parental_responsibility": False,
                "authority": "subject_access",
            }
        self.flow(
            at_london(day, 16),
            pick,
            recipient="family",
            purpose="subject_access",
            categories=categories,
            subjects=[pupil.id],
            channel="encrypted_email",
            request=request,
            **extra,
        )

    def _cctv(self, day: date, pupil: Pupil) -> None:
        pick = self.inj.pick(
            "cctv", [V("RETENTION_EXCEEDED", "CCTV older than 31 days, with no hold, sent to insurers")]
        )
        recorded = at_london(day - timedelta(days=60 if pick else 3), 12, 30)
        self.flow(
            at_london(day, 10),
            pick,
            recipient="insurers",
            purpose="professional_advice",
            categories=["identity", "incident_report", "cctv"],
            subjects=[pupil.id],
            channel="encrypted_email",
            data_recorded_at=utc(recorded),
        )

    def _photos(self, day: date, school: str, roll: list[Pupil]) -> None:
        allowed = [p for p in roll if holds(p, "photo", day)]
        without = [p for p in roll if absent(p, "photo", day)]
        for number in range(self.rng.randrange(1, 4)):
            if not allowed:
                return
            group = self.rng.sample(allowed, min(len(allowed), self.rng.randrange(1, 5)))
            options = [V("PHOTO_WITHOUT_PERMISSION", "group photo published with a pupil who has no photo permission")]
            pick = self.inj.pick("photo", options if without else [])
            ids = [p.id for p in group] + ([self.rng.choice(without).id] if pick else [])
            recipient = "trust-website" if number == 2 else "school-newsletter"
            self.flow(
                at_london(day, 15, 30 + number),
                pick,
                recipient=recipient,
                purpose="promotional_photo",
                categories=["photographs", "identity.name"],
                subjects=ids,
                channel="web",
            )

    def _marketing(self, day: date) -> None:
        if day.weekday() != 4 or day.day > 7 or day.month == 9:
            return
        opted = [
            cid
            for cid, (given, out) in self.marketing.items()
            if given < day - timedelta(days=1) and (out is None or day < out)
        ]
        parents = [c.id for p in self.pop.pupils for c in p.contacts if p.on_roll(day)]
        never = [cid for cid in parents if cid not in self.marketing]
        lapsed = [cid for cid, (_, out) in self.marketing.items() if out is not None and out <= day - timedelta(days=2)]
        for number, cid in enumerate(opted):
            options = []
            if never:
                options.append(V("MARKETING_WITHOUT_CONSENT", "PTA fundraising email to a parent who never opted in"))
            if lapsed:
                options.append(V("MARKETING_WITHOUT_CONSENT", "PTA fundraising email to a parent who had opted out"))
            pick = self.inj.pick("marketing", options)
            if pick is not None:
                cid = self.rng.choice(never if "never" in pick.description else lapsed)
            self.flow(
                at_london(day, 17, number % 60),
                pick,
                recipient="trust-marketing",
                purpose="marketing",
                categories=["parent_contact", "identity.name"],
                subjects=[{"kind": "parent", "id": cid}],
                channel="email",
            )

    def _termly(self, day: date, school: str) -> None:
        cal = self.cal
        roll = self.active(school, day)
        registers = [cal.next_school_day(h + timedelta(days=7)) for h in cal.half_terms]
        if day in registers:
            self._registers(day, school, roll)
        if day in [cal.next_school_day(h + timedelta(days=14)) for h in cal.half_terms] and roll:
            group = self.rng.choice(sorted({p.year_group for p in roll}))
            pick = self.inj.pick(
                "trip",
                [
                    V(
                        "SPECIAL_CATEGORY_WITHOUT_CONDITION",
                        "trip medical notes sent to ParentPay with the trip payment list",
                    )
                ],
            )
            self.flow(
                at_london(day, 9, 30),
                pick,
                recipient="parentpay",
                purpose="parent_payments",
                categories=["identity.name", "parent_contact", "trip", "financial"]
                + (["trip.medical"] if pick else []),
                subjects=[p.id for p in roll if p.year_group == group],
                channel="encrypted_api",
            )
        if day in [cal.next_school_day(c + timedelta(days=5)) for c in cal.census_days] and roll:
            pick = self.inj.pick("census", [V("NO_LAWFUL_BASIS", "census return recorded as resting on consent")])
            self.flow(
                at_london(day, 10),
                pick,
                recipient="dfe",
                purpose="census_return",
                categories=[
                    "identity",
                    "attendance",
                    "assessment",
                    "ethnicity",
                    "first_language",
                    "fsm_eligibility",
                    "sen",
                ],
                subjects=[p.id for p in roll],
                lawful_basis="consent" if pick else "legal_obligation",
                condition="statutory_purposes_para6",
                channel="dfe_collect",
            )
        if day == cal.next_school_day(cal.first_day + timedelta(days=35)) and roll:
            cohort = [p.id for p in roll if p.year_group in (("R", "1", "2") if school == HAWTHORN else ("8",))]
            if cohort:
                self.flow(
                    at_london(day, 9),
                    recipient="sais",
                    purpose="public_health_programme",
                    categories=["identity", "parent_contact", "health"],
                    subjects=cohort,
                    lawful_basis="public_task",
                    condition="health_care_para2",
                    channel="encrypted_portal",
                )
        reports = [
            cal.next_school_day(d)
            for d in (date(cal.year, 12, 10), date(cal.year + 1, 3, 18), date(cal.year + 1, 7, 8))
        ]
        if day in reports:
            self._reports(day, roll)

    def _registers(self, day: date, school: str, roll: list[Pupil]) -> None:
        for kind, recipient, purpose, categories in (
            ("music", "peripatetic-music", "music_tuition", ["identity", "contact"]),
            ("club", "after-school-club", "after_school_club", ["identity", "contact", "parent_contact"]),
            ("hub", "homework-hub", "online_service", ["identity.name", "contact", "edtech_account"]),
        ):
            candidates = {
                "NO_CONSENT": [p for p in roll if absent(p, kind, day)],
                "CONSENT_WITHDRAWN": [p for p in roll if withdrawn(p, kind, day)],
                "CONSENT_GIVER_NOT_AUTHORISED": [p for p in roll if unauthorised(p, kind, day)],
            }
            for pupil in [p for p in roll if holds(p, kind, day)]:
                options = [
                    V(code, f"{purpose} register with a pupil whose consent is {what}")
                    for code, what in (
                        ("NO_CONSENT", "missing"),
                        ("CONSENT_WITHDRAWN", "withdrawn"),
                        ("CONSENT_GIVER_NOT_AUTHORISED", "signed by someone without PR"),
                    )
                    if candidates[code]
                ]
                if kind != "hub":
                    options += [
                        V("SALE_OF_DATA", f"{purpose} provider gave a discount in exchange for the register"),
                        V(
                            "SPECIAL_CATEGORY_WITHOUT_CONDITION",
                            f"health details sent to the {purpose} provider without explicit consent",
                        ),
                    ]
                pick = self.inj.pick(kind, options)
                subject, cats, extra = pupil.id, categories, {}
                if pick is not None and pick.reason in candidates:
                    subject = self.rng.choice(candidates[pick.reason]).id
                elif pick is not None and pick.reason == "SALE_OF_DATA":
                    extra = {"consideration": "discount"}
                elif pick is not None:
                    cats = [*categories, "health"]
                self.flow(
                    at_london(day, 10),
                    pick,
                    recipient=recipient,
                    purpose=purpose,
                    categories=cats,
                    subjects=[subject],
                    channel="encrypted_email",
                    **extra,
                )
        if school == ROSE_VALLEY:
            consenting = [p for p in roll if holds(p, "biometric", day)]
            objected = [
                p for p in consenting if p.biometric_objection and p.biometric_objection <= day - timedelta(days=2)
            ]
            enrolled = [
                p.id
                for p in consenting
                if p not in objected and not (p.biometric_objection and p.biometric_objection <= day)
            ]
            if enrolled:
                options = [V("OBJECTION_NOT_HONOURED", "biometric sync included a pupil who objected")]
                pick = self.inj.pick("biometric", options if objected else [])
                ids = enrolled + ([self.rng.choice(objected).id] if pick else [])
                self.flow(
                    at_london(day, 7, 30),
                    pick,
                    recipient="biometric-catering",
                    purpose="biometric_catering",
                    categories=["identity.name", "biometric"],
                    subjects=ids,
                    channel="encrypted_api",
                )

    def _reports(self, day: date, roll: list[Pupil]) -> None:
        for number, pupil in enumerate(roll):
            parent = pupil.report_recipient()
            if parent is None:
                continue
            options = [V("REQUESTER_NOT_ENTITLED", "school report sent to an aunt with no PR and no care")]
            if pupil.court_order and pupil.court_order <= day - timedelta(days=2):
                options.append(V("COURT_ORDER_RESTRICTION", "school report sent to a father a court order bars"))
            pick = self.inj.pick("report", options)
            request: dict[str, Any] = {
                "requester": parent.id,
                "relationship": parent.relationship,
                "has_parental_responsibility": parent.pr,
                "has_care": parent.care,
                "authorised_by_pupil": pupil.age_on(day) >= 18,
            }
            if pick is not None and pick.reason == "COURT_ORDER_RESTRICTION":
                father = next(c for c in pupil.contacts if c.relationship == "father" and c.pr)
                request = {
                    **request,
                    "requester": father.id,
                    "relationship": "father",
                    "has_parental_responsibility": True,
                }
            elif pick is not None:
                request = {
                    "requester": f"{pupil.id}-aunt",
                    "relationship": "other_relative",
                    "has_parental_responsibility": False,
                    "has_care": False,
                }
            self.flow(
                at_london(day, 16, number % 60),
                pick,
                recipient="family",
                purpose="parent_report",
                categories=["identity", "assessment", "attendance", "behaviour"],
                subjects=[pupil.id],
                channel="encrypted_portal",
                request=request,
            )
