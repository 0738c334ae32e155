"""Identity resolution settings as data: normalisation tables and the linkage model.

The linkage model follows Fellegi–Sunter: each comparison has named levels, each level an
``m`` (probability of that level among true matches) and a ``u`` (among non-matches); a
pair's match weight is the sum of ``log2(m/u)`` over its levels. The numbers below are
fixed priors chosen for Shopify customer data; exact-name levels are further adjusted by
how common the name is in the data being resolved (term frequency), so "Smith" counts for
less than "Okonkwo".
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- email provider rules -------------------------------------------------------------

DOMAIN_ALIASES: dict[str, str] = {
    "googlemail.com": "gmail.com",
    # the commonest mistyped mailbox domains
    "gmial.com": "gmail.com",
    "gmai.com": "gmail.com",
    "gmal.com": "gmail.com",
    "gamil.com": "gmail.com",
    "gmail.co": "gmail.com",
    "gmail.con": "gmail.com",
    "hotmial.com": "hotmail.com",
    "hotmal.com": "hotmail.com",
    "hotmail.con": "hotmail.com",
    "yaho.com": "yahoo.com",
    "yahooo.com": "yahoo.com",
    "yahoo.con": "yahoo.com",
    "outlok.com": "outlook.com",
    "outloo.com": "outlook.com",
    "iclod.com": "icloud.com",
    "icloud.co": "icloud.com",
}
# providers that deliver local+tag@domain to local@domain
PLUS_TAG_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "icloud.com",
        "me.com",
        "fastmail.com",
        "protonmail.com",
        "proton.me",
        "yahoo.com",
    }
)
# providers that ignore dots in the local part
DOT_INSENSITIVE_DOMAINS: frozenset[str] = frozenset({"gmail.com"})

# --- countries ------------------------------------------------------------------------

COUNTRY_ALIASES: dict[str, str] = {
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "us": "US",
    "america": "US",
    "united kingdom": "GB",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "canada": "CA",
    "australia": "AU",
    "new zealand": "NZ",
    "ireland": "IE",
    "germany": "DE",
    "deutschland": "DE",
    "france": "FR",
    "spain": "ES",
    "espana": "ES",
    "italy": "IT",
    "italia": "IT",
    "netherlands": "NL",
    "the netherlands": "NL",
    "belgium": "BE",
    "austria": "AT",
    "switzerland": "CH",
    "sweden": "SE",
    "norway": "NO",
    "denmark": "DK",
    "finland": "FI",
    "portugal": "PT",
    "poland": "PL",
    "japan": "JP",
    "mexico": "MX",
    "brazil": "BR",
    "india": "IN",
    "singapore": "SG",
    "south africa": "ZA",
}

# --- addresses ------------------------------------------------------------------------

# long form -> the USPS/Royal Mail style short form, so both spellings meet in the middle
STREET_ABBREVIATIONS: dict[str, str] = {
    "street": "st",
    "str": "st",
    "avenue": "ave",
    "av": "ave",
    "avn": "ave",
    "road": "rd",
    "boulevard": "blvd",
    "drive": "dr",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "square": "sq",
    "terrace": "ter",
    "parkway": "pkwy",
    "highway": "hwy",
    "circle": "cir",
    "crescent": "cres",
    "close": "cl",
    "gardens": "gdns",
    "grove": "gr",
    "way": "way",
    "trail": "trl",
    "mount": "mt",
    "point": "pt",
    "apartment": "apt",
    "suite": "ste",
    "unit": "unit",
    "floor": "fl",
    "building": "bldg",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "northeast": "ne",
    "northwest": "nw",
    "southeast": "se",
    "southwest": "sw",
    "first": "1st",
    "second": "2nd",
    "third": "3rd",
    "fourth": "4th",
    "fifth": "5th",
}

# --- names ----------------------------------------------------------------------------

# nickname -> formal first name (first token, lowercase ASCII); see NICKNAMES below
_NICKNAME_SINGLE: dict[str, str] = {
    # men
    "bob": "robert",
    "bobby": "robert",
    "rob": "robert",
    "robbie": "robert",
    "bert": "robert",
    "bill": "william",
    "billy": "william",
    "will": "william",
    "willy": "william",
    "jim": "james",
    "jimmy": "james",
    "jamie": "james",
    "jack": "john",
    "johnny": "john",
    "jon": "john",
    "mike": "michael",
    "mikey": "michael",
    "mick": "michael",
    "mickey": "michael",
    "dave": "david",
    "davy": "david",
    "dick": "richard",
    "rick": "richard",
    "ricky": "richard",
    "rich": "richard",
    "richie": "richard",
    "tom": "thomas",
    "tommy": "thomas",
    "chris": "christopher",
    "kit": "christopher",
    "dan": "daniel",
    "danny": "daniel",
    "joe": "joseph",
    "joey": "joseph",
    "charlie": "charles",
    "chuck": "charles",
    "chas": "charles",
    "matt": "matthew",
    "tony": "anthony",
    "ant": "anthony",
    "andy": "andrew",
    "drew": "andrew",
    "steve": "steven",
    "stephen": "steven",
    "stevie": "steven",
    "ed": "edward",
    "eddie": "edward",
    "ted": "edward",
    "ned": "edward",
    "ben": "benjamin",
    "benny": "benjamin",
    "sam": "samuel",
    "sammy": "samuel",
    "nick": "nicholas",
    "nicky": "nicholas",
    "alex": "alexander",
    "al": "albert",
    "greg": "gregory",
    "jeff": "jeffrey",
    "geoff": "jeffrey",
    "geoffrey": "jeffrey",
    "josh": "joshua",
    "ken": "kenneth",
    "kenny": "kenneth",
    "larry": "lawrence",
    "laurence": "lawrence",
    "len": "leonard",
    "lenny": "leonard",
    "leo": "leonard",
    "pat": "patrick",
    "paddy": "patrick",
    "pete": "peter",
    "phil": "philip",
    "phillip": "philip",
    "ray": "raymond",
    "ron": "ronald",
    "ronnie": "ronald",
    "don": "donald",
    "donnie": "donald",
    "doug": "douglas",
    "fred": "frederick",
    "freddie": "frederick",
    "frank": "francis",
    "frankie": "francis",
    "gerry": "gerald",
    "jerry": "gerald",
    "hank": "henry",
    "harry": "henry",
    "hal": "henry",
    "jake": "jacob",
    "walt": "walter",
    "wally": "walter",
    "zach": "zachary",
    "zack": "zachary",
    "nate": "nathan",
    "nathaniel": "nathan",
    "tim": "timothy",
    "timmy": "timothy",
    "vince": "vincent",
    "vic": "victor",
    "manny": "manuel",
    "pepe": "jose",
    "paco": "francisco",
    "pancho": "francisco",
    "sandy": "alexander",
    "stan": "stanley",
    "russ": "russell",
    "ollie": "oliver",
    "olly": "oliver",
    "toby": "tobias",
    "theo": "theodore",
    "teddy": "theodore",
    "max": "maximilian",
    "abe": "abraham",
    "art": "arthur",
    "gus": "augustus",
    "herb": "herbert",
    "howie": "howard",
    "mo": "maurice",
    "morrie": "maurice",
    "cal": "calvin",
    "mitch": "mitchell",
    "marty": "martin",
    "rudy": "rudolph",
    "terry": "terence",
    "wes": "wesley",
    # women
    "liz": "elizabeth",
    "lizzie": "elizabeth",
    "lizzy": "elizabeth",
    "beth": "elizabeth",
    "betty": "elizabeth",
    "betsy": "elizabeth",
    "eliza": "elizabeth",
    "libby": "elizabeth",
    "elisabeth": "elizabeth",
    "kate": "katherine",
    "katie": "katherine",
    "kathy": "katherine",
    "cathy": "katherine",
    "kat": "katherine",
    "kitty": "katherine",
    "catherine": "katherine",
    "kathryn": "katherine",
    "katharine": "katherine",
    "peggy": "margaret",
    "maggie": "margaret",
    "meg": "margaret",
    "marge": "margaret",
    "margie": "margaret",
    "greta": "margaret",
    "jenny": "jennifer",
    "jen": "jennifer",
    "jenn": "jennifer",
    "sue": "susan",
    "susie": "susan",
    "suzy": "susan",
    "suzanne": "susan",
    "patty": "patricia",
    "patsy": "patricia",
    "trish": "patricia",
    "tricia": "patricia",
    "debbie": "deborah",
    "deb": "deborah",
    "debra": "deborah",
    "becky": "rebecca",
    "becca": "rebecca",
    "vicky": "victoria",
    "vicki": "victoria",
    "tori": "victoria",
    "abby": "abigail",
    "abbie": "abigail",
    "mandy": "amanda",
    "manda": "amanda",
    "lexi": "alexandra",
    "ally": "allison",
    "allie": "allison",
    "alison": "allison",
    "annie": "anne",
    "ann": "anne",
    "barb": "barbara",
    "babs": "barbara",
    "carrie": "caroline",
    "carol": "caroline",
    "cindy": "cynthia",
    "chrissy": "christina",
    "tina": "christina",
    "christine": "christina",
    "dot": "dorothy",
    "dottie": "dorothy",
    "dolly": "dorothy",
    "ellie": "eleanor",
    "nell": "eleanor",
    "nellie": "eleanor",
    "gina": "regina",
    "jo": "josephine",
    "josie": "josephine",
    "judy": "judith",
    "jude": "judith",
    "julie": "julia",
    "maddie": "madeline",
    "madeleine": "madeline",
    "molly": "mary",
    "polly": "mary",
    "mae": "mary",
    "mamie": "mary",
    "mandi": "amanda",
    "missy": "melissa",
    "mel": "melissa",
    "nicki": "nicole",
    "nikki": "nicole",
    "pam": "pamela",
    "penny": "penelope",
    "rosie": "rose",
    "sally": "sarah",
    "sadie": "sarah",
    "sara": "sarah",
    "steph": "stephanie",
    "stephie": "stephanie",
    "terri": "theresa",
    "tess": "theresa",
    "tessa": "theresa",
    "teresa": "theresa",
    "val": "valerie",
    "wendy": "gwendolyn",
    "sammie": "samantha",
    "lou": "louise",
    "lulu": "louise",
    "bella": "isabella",
    "izzy": "isabella",
    "isabel": "isabella",
    "emmy": "emily",
    "em": "emma",
    "gabby": "gabrielle",
    "jess": "jessica",
    "jessie": "jessica",
    "kim": "kimberly",
    "kimmy": "kimberly",
    "liv": "olivia",
    "livvy": "olivia",
    "lottie": "charlotte",
    "charly": "charlotte",
    "roni": "veronica",
    "sophie": "sophia",
    "fran": "frances",
    "angie": "angela",
    "bev": "beverly",
    "connie": "constance",
    "dee": "deirdre",
    "di": "diana",
    "diane": "diana",
    "hattie": "harriet",
    "jackie": "jacqueline",
    "lori": "lorraine",
    "mindy": "melinda",
    "shelly": "michelle",
    "shelley": "michelle",
    "trudy": "gertrude",
    "winnie": "winifred",
    "lindy": "linda",
    "davey": "david",
    "topher": "christopher",
    "ash": "ashley",
    "kev": "kevin",
    "xander": "alexander",
    "tobi": "tobias",
    "seb": "sebastian",
    "basti": "sebastian",
    "luke": "lucas",
    "liam": "william",
}

# nicknames shared by several formal names: "Pat" may be Patricia or Patrick
_NICKNAME_MULTI: dict[str, tuple[str, ...]] = {
    "pat": ("patricia", "patrick"),
    "patty": ("patricia",),
    "alex": ("alexander", "alexandra"),
    "sasha": ("alexandra", "alexander"),
    "sandy": ("sandra", "alexander", "alexandra"),
    "sam": ("samuel", "samantha"),
    "sammy": ("samuel", "samantha"),
    "chris": ("christopher", "christine", "christina"),
    "chrissy": ("christine", "christina"),
    "charlie": ("charles", "charlotte"),
    "em": ("emily", "emma"),
    "emmy": ("emily", "emma"),
    "cat": ("catherine", "katherine"),
    "annie": ("anne", "anna"),
    "nan": ("nancy", "anne"),
    "millie": ("amelia", "mildred"),
    "hanna": ("hannah", "johanna"),
    "jules": ("julia", "julian"),
    "mo": ("mohammed", "maurice"),
    "frankie": ("francis", "frances"),
    "fran": ("frances", "francis"),
    "ronnie": ("ronald", "veronica"),
    "jo": ("josephine", "joanna"),
    "gabby": ("gabrielle", "gabriella"),
    "andy": ("andrew", "andrea"),
    "danny": ("daniel", "danielle"),
    "toni": ("antonia",),
    "vicky": ("victoria",),
}

# nickname -> every formal name it may stand for (the first is used for blocking)
NICKNAMES: dict[str, tuple[str, ...]] = {k: (v,) for k, v in _NICKNAME_SINGLE.items()} | _NICKNAME_MULTI


# --- linkage model --------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One named level of a comparison with its m and u probabilities.

    ``u`` is the chance that two different people meet this level. With ``tf`` set, u is
    instead the share of records holding the pair's value of column ``tf`` (term
    frequency: a shared "Smith" or a shared office address says less than a rare one); runs
    over fewer than ``tf_min_records`` records use the fixed ``u``, as shares from a
    handful of records mean nothing.
    With ``per_record`` set, ``u`` counts random partners per record and is divided by the
    number of records (near-unique values such as a mistyped email).
    """

    name: str
    m: float
    u: float
    tf: str | None = None
    per_record: bool = False


@dataclass(frozen=True)
class Comparison:
    """A named comparison: its levels, most specific first (a ``null`` level weighs 0)."""

    name: str
    levels: tuple[Level, ...]

    def level(self, name: str) -> Level:
        """The level called ``name``."""
        for lvl in self.levels:
            if lvl.name == name:
                return lvl
        raise KeyError(f"comparison {self.name} has no level {name}")


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "first_name",
        (
            Level("exact", 0.88, 0.005, tf="first_token"),
            Level("nickname", 0.06, 0.002),
            Level("fuzzy", 0.04, 0.01),
            Level("initial", 0.01, 0.05),
            # a different first name is treated as a different person whatever else agrees
            Level("different", 0.01, 0.93),
        ),
    ),
    Comparison(
        "last_name",
        (
            Level("exact", 0.92, 0.002, tf="last_name_norm"),
            Level("fuzzy", 0.06, 0.005),
            Level("different", 0.02, 0.993),
        ),
    ),
    Comparison(
        "email",
        (
            Level("exact", 0.55, 0.00001, tf="email_norm"),
            Level("same_local_part", 0.10, 0.00001, tf="email_local"),
            Level("fuzzy_local_part", 0.05, 2.0, per_record=True),
            # people reuse their number (birth year, house number) across mailboxes
            Level("same_number", 0.12, 0.0005, tf="email_digits"),
            Level("different", 0.18, 0.9999),
        ),
    ),
    Comparison(
        "phone",
        (
            Level("exact", 0.75, 0.00001, tf="phone_e164"),
            Level("same_last_7", 0.03, 5.0, per_record=True),
            Level("different", 0.22, 0.9999),
        ),
    ),
    Comparison(
        "location",
        (
            Level("same_address", 0.65, 0.0001, tf="address_key"),
            Level("similar_address", 0.08, 3.0, per_record=True),
            Level("same_postcode", 0.07, 0.001, tf="postcode"),
            Level("same_city", 0.05, 0.02, tf="city_norm"),
            Level("different", 0.15, 0.97),
        ),
    ),
)


@dataclass(frozen=True)
class LinkageSettings:
    """Everything that steers a resolution run; defaults suit Shopify customer data.

    Thresholds are on the summed log2(m/u) *above* log2(number of records; below
    ``tf_min_records`` records, log2(``fixed_u_population``)): the chance
    that two records picked at random are one person falls with the number of records, so
    the evidence needed rises with it. ``match_margin`` 0 is a 50 % posterior at one true
    partner per record (on generated shops of 13k–1M records: precision ≥ 0.998, and
    raising it to 2 costs ~0.3 % recall for +0.0005 precision). Pairs between
    ``review_margin`` and ``match_margin`` go to review.
    ``hub_max_names``: a normalised email or phone seen with more than this many distinct
    first names is a hub (a store's own phone, an office inbox) and links nothing.
    ``hub_max_records``: the same for a key on more than this many records whatever the
    names (an office inbox whose orders all carry one name, or none, must not chain every
    person behind it into one contact). One shopper's account, guest orders and checkouts
    across a few stores stay well below it; the hub's records can still link on name,
    address and their other keys.
    ``max_block_size``: blocks larger than this are skipped (the pairs they would yield say
    little and cost a lot).
    """

    comparisons: tuple[Comparison, ...] = COMPARISONS
    match_margin: float = 0.0
    review_margin: float = -4.0
    hub_max_names: int = 3
    hub_max_records: int = 25
    max_block_size: int = 40
    tf_min_records: int = 1000
    # the fixed u values describe a shop of this many records; small runs are judged as if
    # drawn from one, so a shared name alone never links two records of a tiny file
    fixed_u_population: int = 100_000
    # a typo is one edit; Patrick/Patricia or Daniel/Danielle (two) are different people
    first_name_max_edits: int = 1
    last_name_fuzzy_threshold: float = 0.90
    email_max_edits: int = 2
    street_fuzzy_threshold: float = 0.90
    default_region: str = "US"
    shop_regions: dict[str, str] = field(default_factory=dict)
    # blocking rules: each a tuple of normalised columns that must be equal and non-null
    blocking_rules: tuple[tuple[str, ...], ...] = (
        ("email_local",),
        ("phone_e164",),
        ("last_name_norm", "email_digits"),
        ("first_canon", "email_digits"),
        ("address_norm", "postcode"),
        ("last_name_norm", "house_number", "city_norm"),
        # name-only blocks (first+last, first+postcode, last+postcode) are left out on
        # purpose: at shop scale a shared name and area cannot reach the match weight, and
        # at 1M records they yield 10M pairs for ~0.1 % recall
    )

    def comparison(self, name: str) -> Comparison:
        """The comparison called ``name``."""
        for comp in self.comparisons:
            if comp.name == name:
                return comp
        raise KeyError(f"no comparison {name}")


DEFAULT_SETTINGS = LinkageSettings()
