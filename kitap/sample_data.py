"""Deterministic, realistic sample data (catalogue, copies, readers) for demos and tests.

Everything here is a pure function of its arguments: the catalogue is fixed, and
:func:`generate` draws from ``random.Random(seed)`` only, never from the global generator.

Conventions:

* ISBNs are plain 13-digit strings without hyphens, with a correct check digit. The
  registration group follows the language: 978-601 (Kazakhstan) for Kazakh, 978-5 for
  Russian, 978-0 / 978-1 for English. The numbers themselves are synthetic.
* ``Title.year`` is the year of the edition the library holds, not of first publication.
* ``Copy.barcode`` doubles as the copy's RFID tag.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

__all__ = [
    "Copy",
    "NodeSpec",
    "Reader",
    "SampleData",
    "Title",
    "catalogue",
    "default_nodes",
    "generate",
]

LANGUAGES = ("kk", "ru", "en")
ITEM_TYPES = ("book", "children", "reference")
NODE_KINDS = ("machine", "branch")
READER_CATEGORIES = ("adult", "child", "student", "pensioner", "partner_staff", "supported")


@dataclass(frozen=True, slots=True)
class Title:
    """One catalogue title (a bibliographic record, not a physical copy)."""

    id: str
    isbn: str
    title: str
    author: str
    language: str
    year: int
    item_type: str


@dataclass(frozen=True, slots=True)
class Copy:
    """One physical copy; the barcode is also its RFID tag; slot is set only in machines."""

    barcode: str
    title_id: str
    home_node: str
    location_node: str
    slot: int | None


@dataclass(frozen=True, slots=True)
class Reader:
    """A library card holder."""

    card: str
    name: str
    category: str
    pin: str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node of the network: a book-vending machine (with slots) or a branch (slots 0)."""

    id: str
    kind: str
    name: str
    slots: int


@dataclass(frozen=True)
class SampleData:
    """A complete generated data set."""

    titles: list[Title]
    copies: list[Copy]
    readers: list[Reader]
    nodes: list[NodeSpec]


# --------------------------------------------------------------------------------------
# The catalogue: (title, author, edition year, item type).

_B, _C, _R = "book", "children", "reference"

_KK: tuple[tuple[str, str, int, str], ...] = (
    ("Қара сөздер", "Абай Құнанбайұлы", 2020, _B),
    ("Өлеңдер мен поэмалар", "Абай Құнанбайұлы", 2015, _B),
    ("Абай жолы", "Мұхтар Әуезов", 2017, _B),
    ("Көксерек", "Мұхтар Әуезов", 2013, _B),
    ("Қараш-Қараш оқиғасы", "Мұхтар Әуезов", 2012, _B),
    ("Қилы заман", "Мұхтар Әуезов", 2016, _B),
    ("Еңлік-Кебек", "Мұхтар Әуезов", 2011, _B),
    ("Өскен өркен", "Мұхтар Әуезов", 2014, _B),
    ("Көшпенділер", "Ілияс Есенберлин", 2019, _B),
    ("Алмас қылыш", "Ілияс Есенберлин", 2016, _B),
    ("Жанталас", "Ілияс Есенберлин", 2015, _B),
    ("Қаһар", "Ілияс Есенберлин", 2014, _B),
    ("Алтын Орда", "Ілияс Есенберлин", 2018, _B),
    ("Ғашықтар", "Ілияс Есенберлин", 2012, _B),
    ("Қатерлі өткел", "Ілияс Есенберлин", 2010, _B),
    ("Адамға табын, Жер!", "Олжас Сүлейменов", 2011, _B),
    ("Батыр Баян", "Мағжан Жұмабаев", 2013, _B),
    ("Таңдамалы өлеңдер", "Мағжан Жұмабаев", 2017, _B),
    ("Педагогика", "Мағжан Жұмабаев", 2012, _B),
    ("Шұғаның белгісі", "Бейімбет Майлин", 2012, _B),
    ("Азамат Азаматыч", "Бейімбет Майлин", 2014, _B),
    ("Раушан коммунист", "Бейімбет Майлин", 2010, _B),
    ("Тар жол, тайғақ кешу", "Сәкен Сейфуллин", 2016, _B),
    ("Көкшетау", "Сәкен Сейфуллин", 2013, _B),
    ("Ақсақ киік", "Сәкен Сейфуллин", 2011, _B),
    ("Ұлпан", "Ғабит Мүсірепов", 2015, _B),
    ("Оянған өлке", "Ғабит Мүсірепов", 2012, _B),
    ("Қазақ солдаты", "Ғабит Мүсірепов", 2010, _B),
    ("Ақан сері — Ақтоқты", "Ғабит Мүсірепов", 2014, _B),
    ("Шырағың сөнбесін", "Тахауи Ахтанов", 2011, _B),
    ("Боран", "Тахауи Ахтанов", 2013, _B),
    ("Қан мен тер", "Әбдіжәміл Нұрпейісов", 2012, _B),
    ("Соңғы парыз", "Әбдіжәміл Нұрпейісов", 2010, _B),
    ("Аққулар ұйықтағанда", "Мұқағали Мақатаев", 2016, _B),
    ("Өмір-өзен", "Мұқағали Мақатаев", 2013, _B),
    ("Дариға, жүрек", "Мұқағали Мақатаев", 2018, _B),
    ("Маса", "Ахмет Байтұрсынұлы", 2013, _B),
    ("Қырық мысал", "Ахмет Байтұрсынұлы", 2012, _B),
    ("Әдебиет танытқыш", "Ахмет Байтұрсынұлы", 2014, _B),
    ("Оян, қазақ!", "Міржақып Дулатұлы", 2013, _B),
    ("Бақытсыз Жамал", "Міржақып Дулатұлы", 2011, _B),
    ("Үш анық", "Шәкәрім Құдайбердіұлы", 2014, _B),
    ("Қалқаман-Мамыр", "Шәкәрім Құдайбердіұлы", 2012, _B),
    ("Қазақ хрестоматиясы", "Ыбырай Алтынсарин", 2010, _B),
    ("Кел, балалар, оқылық!", "Ыбырай Алтынсарин", 2015, _C),
    ("Қартқожа", "Жүсіпбек Аймауытұлы", 2013, _B),
    ("Ақбілек", "Жүсіпбек Аймауытұлы", 2015, _B),
    ("Ботагөз", "Сәбит Мұқанов", 2012, _B),
    ("Сұлушаш", "Сәбит Мұқанов", 2011, _B),
    ("Өмір мектебі", "Сәбит Мұқанов", 2014, _B),
    ("Қарағанды", "Ғабиден Мұстафин", 2010, _B),
    ("Миллионер", "Ғабиден Мұстафин", 2012, _B),
    ("Үркер", "Әбіш Кекілбаев", 2013, _B),
    ("Елең-алаң", "Әбіш Кекілбаев", 2014, _B),
    ("Аңыздың ақыры", "Әбіш Кекілбаев", 2011, _B),
    ("Қарғын", "Дулат Исабеков", 2012, _B),
    ("Гауһартас", "Дулат Исабеков", 2015, _B),
    ("Атау-кере", "Оралхан Бөкей", 2013, _B),
    ("Қар қызы", "Оралхан Бөкей", 2014, _B),
    ("Мұзтау", "Оралхан Бөкей", 2011, _B),
    ("Қаракөк", "Тәкен Әлімқұлов", 2012, _B),
    ("Жусан иісі", "Сайын Мұратбеков", 2014, _B),
    ("Басбұзар", "Сайын Мұратбеков", 2011, _B),
    ("Аласапыран", "Мұхтар Мағауин", 2013, _B),
    ("Шаһмардан", "Мұхтар Мағауин", 2016, _B),
    ("Жармақ", "Мұхтар Мағауин", 2012, _B),
    ("Мен", "Мұхтар Мағауин", 2017, _B),
    ("Маздақ", "Фариза Оңғарсынова", 2011, _B),
    ("Домбыра", "Қадыр Мырза Әли", 2012, _B),
    ("Жазмыш", "Қадыр Мырза Әли", 2016, _B),
    ("Парасат майданы", "Төлен Әбдік", 2014, _B),
    ("Өліара", "Төлен Әбдік", 2012, _B),
    ("Ақ боз үй", "Смағұл Елубай", 2015, _B),
    ("Мәңгілік бала бейне", "Роза Мұқанова", 2016, _B),
    ("Бесін", "Асқар Сүлейменов", 2012, _B),
    ("Ант", "Тынымбай Нұрмағамбетов", 2013, _B),
    ("Гүлдер мен кітаптар", "Дидар Амантай", 2011, _B),
    ("Ақ дүние", "Айгүл Кемелбаева", 2014, _B),
    ("Қобыланды батыр", "Қазақ халық эпосы", 2013, _B),
    ("Қыз Жібек", "Қазақ халық эпосы", 2012, _B),
    ("Қозы Көрпеш — Баян сұлу", "Қазақ халық эпосы", 2014, _B),
    ("Алпамыс батыр", "Қазақ халық эпосы", 2011, _B),
    ("Ер Тарғын", "Қазақ халық эпосы", 2015, _B),
    ("Қазақтың мақал-мәтелдері", "Халық ауыз әдебиеті", 2014, _B),
    ("Менің атым Қожа", "Бердібек Соқпақбаев", 2016, _C),
    ("Балалық шаққа саяхат", "Бердібек Соқпақбаев", 2014, _C),
    ("Қазақ халық ертегілері", "Қазақ халық ертегісі", 2018, _C),
    ("Алдар Көсе", "Қазақ халық ертегісі", 2017, _C),
    ("Ер Төстік", "Қазақ халық ертегісі", 2016, _C),
    ("Керқұла атты Кендебай", "Қазақ халық ертегісі", 2015, _C),
    ("Қожанасыр әңгімелері", "Қазақ халық ертегісі", 2013, _C),
    ("Ақсақ құлан", "Қазақ халық ертегісі", 2014, _C),
    ("Алтын сақа", "Қазақ халық ертегісі", 2015, _C),
    ("Қаңбақ шал", "Қазақ халық ертегісі", 2014, _C),
    ("Аяз би", "Қазақ халық ертегісі", 2013, _C),
    ("Балаларға арналған өлеңдер", "Мұзафар Әлімбаев", 2012, _C),
    ("Кішкентай ханзада", "Антуан де Сент-Экзюпери", 2019, _C),
    ("Гарри Поттер және пәлсапа тасы", "Джоан Роулинг", 2020, _C),
    ("Шал мен теңіз", "Эрнест Хемингуэй", 2017, _B),
    ("Жүз жылдық жалғыздық", "Габриэль Гарсиа Маркес", 2019, _B),
    ("Сапиенс: адамзаттың қысқаша тарихы", "Юваль Ной Харари", 2019, _B),
    ("Қазақша-орысша сөздік", "Тіл білімі институты", 2014, _R),
    ("Орысша-қазақша сөздік", "Тіл білімі институты", 2014, _R),
    ("Ағылшынша-қазақша сөздік", "Тіл білімі институты", 2016, _R),
    ("Қазақ тілінің түсіндірме сөздігі", "Тіл білімі институты", 2011, _R),
    ("Қазақ тілінің орфографиялық сөздігі", "Тіл білімі институты", 2013, _R),
    ("Қазақстан: ұлттық энциклопедия", "Қазақ энциклопедиясы", 2012, _R),
    ("Алматы: энциклопедия", "Қазақ энциклопедиясы", 2015, _R),
    ("Қазақстан Республикасының атласы", "Ұлттық картография қызметі", 2010, _R),
)

_RU: tuple[tuple[str, str, int, str], ...] = (
    ("Война и мир", "Лев Толстой", 2019, _B),
    ("Анна Каренина", "Лев Толстой", 2020, _B),
    ("Воскресение", "Лев Толстой", 2015, _B),
    ("Детство. Отрочество. Юность", "Лев Толстой", 2017, _B),
    ("Хаджи-Мурат", "Лев Толстой", 2014, _B),
    ("Преступление и наказание", "Фёдор Достоевский", 2021, _B),
    ("Идиот", "Фёдор Достоевский", 2018, _B),
    ("Братья Карамазовы", "Фёдор Достоевский", 2019, _B),
    ("Бесы", "Фёдор Достоевский", 2016, _B),
    ("Записки из подполья", "Фёдор Достоевский", 2015, _B),
    ("Белые ночи", "Фёдор Достоевский", 2017, _B),
    ("Дама с собачкой. Рассказы", "Антон Чехов", 2018, _B),
    ("Вишнёвый сад", "Антон Чехов", 2016, _B),
    ("Палата № 6", "Антон Чехов", 2015, _B),
    ("Евгений Онегин", "Александр Пушкин", 2019, _B),
    ("Капитанская дочка", "Александр Пушкин", 2018, _B),
    ("Повести Белкина", "Александр Пушкин", 2016, _B),
    ("Сказка о царе Салтане", "Александр Пушкин", 2020, _C),
    ("Сказка о рыбаке и рыбке", "Александр Пушкин", 2019, _C),
    ("Герой нашего времени", "Михаил Лермонтов", 2018, _B),
    ("Мёртвые души", "Николай Гоголь", 2017, _B),
    ("Вечера на хуторе близ Диканьки", "Николай Гоголь", 2016, _B),
    ("Ревизор", "Николай Гоголь", 2015, _B),
    ("Отцы и дети", "Иван Тургенев", 2018, _B),
    ("Записки охотника", "Иван Тургенев", 2014, _B),
    ("Мастер и Маргарита", "Михаил Булгаков", 2021, _B),
    ("Собачье сердце", "Михаил Булгаков", 2019, _B),
    ("Белая гвардия", "Михаил Булгаков", 2017, _B),
    ("Реквием", "Анна Ахматова", 2016, _B),
    ("Бег времени", "Анна Ахматова", 2013, _B),
    ("Доктор Живаго", "Борис Пастернак", 2018, _B),
    ("Стихотворения и поэмы", "Марина Цветаева", 2015, _B),
    ("Анна Снегина", "Сергей Есенин", 2014, _B),
    ("Тёмные аллеи", "Иван Бунин", 2017, _B),
    ("Защита Лужина", "Владимир Набоков", 2019, _B),
    ("Дар", "Владимир Набоков", 2016, _B),
    ("Тихий Дон", "Михаил Шолохов", 2015, _B),
    ("Котлован", "Андрей Платонов", 2016, _B),
    ("Один день Ивана Денисовича", "Александр Солженицын", 2018, _B),
    ("Жизнь и судьба", "Василий Гроссман", 2017, _B),
    ("Двенадцать стульев", "Илья Ильф, Евгений Петров", 2019, _B),
    ("Золотой телёнок", "Илья Ильф, Евгений Петров", 2018, _B),
    ("Пикник на обочине", "Аркадий и Борис Стругацкие", 2020, _B),
    ("Трудно быть богом", "Аркадий и Борис Стругацкие", 2019, _B),
    ("Понедельник начинается в субботу", "Аркадий и Борис Стругацкие", 2018, _B),
    ("Улитка на склоне", "Аркадий и Борис Стругацкие", 2015, _B),
    ("Generation «П»", "Виктор Пелевин", 2017, _B),
    ("Чапаев и Пустота", "Виктор Пелевин", 2018, _B),
    ("Омон Ра", "Виктор Пелевин", 2015, _B),
    ("Казус Кукоцкого", "Людмила Улицкая", 2016, _B),
    ("Медея и её дети", "Людмила Улицкая", 2015, _B),
    ("Зелёный шатёр", "Людмила Улицкая", 2011, _B),
    ("Лестница Якова", "Людмила Улицкая", 2015, _B),
    ("Зулейха открывает глаза", "Гузель Яхина", 2015, _B),
    ("Дети мои", "Гузель Яхина", 2018, _B),
    ("Эшелон на Самарканд", "Гузель Яхина", 2021, _B),
    ("Лавр", "Евгений Водолазкин", 2012, _B),
    ("Авиатор", "Евгений Водолазкин", 2016, _B),
    ("Брисбен", "Евгений Водолазкин", 2019, _B),
    ("День опричника", "Владимир Сорокин", 2016, _B),
    ("Азазель", "Борис Акунин", 2018, _B),
    ("Турецкий гамбит", "Борис Акунин", 2018, _B),
    ("У войны не женское лицо", "Светлана Алексиевич", 2017, _B),
    ("Время секонд хэнд", "Светлана Алексиевич", 2016, _B),
    ("Заповедник", "Сергей Довлатов", 2019, _B),
    ("Компромисс", "Сергей Довлатов", 2018, _B),
    ("И дольше века длится день", "Чингиз Айтматов", 2018, _B),
    ("Плаха", "Чингиз Айтматов", 2016, _B),
    ("Белый пароход", "Чингиз Айтматов", 2017, _B),
    ("Джамиля", "Чингиз Айтматов", 2015, _B),
    ("Аз и Я", "Олжас Сулейменов", 2016, _B),
    ("Земля, поклонись человеку!", "Олжас Сулейменов", 2012, _B),
    ("Хранитель древностей", "Юрий Домбровский", 2017, _B),
    ("Факультет ненужных вещей", "Юрий Домбровский", 2018, _B),
    ("Древние тюрки", "Лев Гумилёв", 2017, _B),
    ("Письма о добром", "Дмитрий Лихачёв", 2018, _B),
    ("Сто лет одиночества", "Габриэль Гарсиа Маркес", 2020, _B),
    ("Три товарища", "Эрих Мария Ремарк", 2019, _B),
    ("Над пропастью во ржи", "Джером Д. Сэлинджер", 2018, _B),
    ("451° по Фаренгейту", "Рэй Брэдбери", 2020, _B),
    ("1984", "Джордж Оруэлл", 2021, _B),
    ("Норвежский лес", "Харуки Мураками", 2019, _B),
    ("Алхимик", "Пауло Коэльо", 2018, _B),
    ("Хоббит, или Туда и обратно", "Джон Р. Р. Толкин", 2020, _C),
    ("Маленький принц", "Антуан де Сент-Экзюпери", 2020, _C),
    ("Малыш и Карлсон, который живёт на крыше", "Астрид Линдгрен", 2019, _C),
    ("Приключения Незнайки и его друзей", "Николай Носов", 2019, _C),
    ("Мойдодыр", "Корней Чуковский", 2020, _C),
    ("Двенадцать месяцев", "Самуил Маршак", 2018, _C),
    ("Крокодил Гена и его друзья", "Эдуард Успенский", 2019, _C),
    ("Денискины рассказы", "Виктор Драгунский", 2020, _C),
    ("Волшебник Изумрудного города", "Александр Волков", 2021, _C),
    ("Стихи детям", "Агния Барто", 2018, _C),
    ("Лесная газета", "Виталий Бианки", 2017, _C),
    ("Золотой ключик, или Приключения Буратино", "Алексей Толстой", 2019, _C),
    ("Приключения Алисы", "Кир Булычёв", 2018, _C),
    ("Толковый словарь русского языка", "Сергей Ожегов, Наталия Шведова", 2018, _R),
    ("Толковый словарь живого великорусского языка", "Владимир Даль", 2015, _R),
    ("Этимологический словарь русского языка", "Макс Фасмер", 2014, _R),
    ("Справочник по правописанию и литературной правке", "Дитмар Розенталь", 2016, _R),
    ("Англо-русский словарь", "Владимир Мюллер", 2017, _R),
    ("Атлас мира", "Роскартография", 2019, _R),
)

_EN: tuple[tuple[str, str, int, str], ...] = (
    ("Pride and Prejudice", "Jane Austen", 2003, _B),
    ("Emma", "Jane Austen", 2003, _B),
    ("Sense and Sensibility", "Jane Austen", 2003, _B),
    ("Persuasion", "Jane Austen", 2012, _B),
    ("Great Expectations", "Charles Dickens", 2002, _B),
    ("Oliver Twist", "Charles Dickens", 2003, _B),
    ("A Tale of Two Cities", "Charles Dickens", 2003, _B),
    ("David Copperfield", "Charles Dickens", 2004, _B),
    ("A Christmas Carol", "Charles Dickens", 2015, _B),
    ("Nineteen Eighty-Four", "George Orwell", 2008, _B),
    ("Animal Farm", "George Orwell", 2008, _B),
    ("The Hobbit", "J. R. R. Tolkien", 2012, _C),
    ("The Fellowship of the Ring", "J. R. R. Tolkien", 2012, _B),
    ("The Two Towers", "J. R. R. Tolkien", 2012, _B),
    ("The Return of the King", "J. R. R. Tolkien", 2012, _B),
    ("Jane Eyre", "Charlotte Brontë", 2006, _B),
    ("Wuthering Heights", "Emily Brontë", 2003, _B),
    ("Frankenstein", "Mary Shelley", 2003, _B),
    ("Adventures of Huckleberry Finn", "Mark Twain", 2014, _B),
    ("The Adventures of Tom Sawyer", "Mark Twain", 2011, _C),
    ("The Great Gatsby", "F. Scott Fitzgerald", 2004, _B),
    ("The Old Man and the Sea", "Ernest Hemingway", 1995, _B),
    ("Of Mice and Men", "John Steinbeck", 2002, _B),
    ("The Grapes of Wrath", "John Steinbeck", 2006, _B),
    ("To Kill a Mockingbird", "Harper Lee", 2006, _B),
    ("The Catcher in the Rye", "J. D. Salinger", 2001, _B),
    ("A Wizard of Earthsea", "Ursula K. Le Guin", 2012, _C),
    ("The Left Hand of Darkness", "Ursula K. Le Guin", 2000, _B),
    ("The Dispossessed", "Ursula K. Le Guin", 2003, _B),
    ("Beloved", "Toni Morrison", 2004, _B),
    ("The Bluest Eye", "Toni Morrison", 2007, _B),
    ("Song of Solomon", "Toni Morrison", 2004, _B),
    ("The Remains of the Day", "Kazuo Ishiguro", 1993, _B),
    ("Never Let Me Go", "Kazuo Ishiguro", 2005, _B),
    ("Klara and the Sun", "Kazuo Ishiguro", 2021, _B),
    ("The Handmaid's Tale", "Margaret Atwood", 2017, _B),
    ("Oryx and Crake", "Margaret Atwood", 2003, _B),
    ("Alias Grace", "Margaret Atwood", 1997, _B),
    ("Mrs Dalloway", "Virginia Woolf", 2000, _B),
    ("To the Lighthouse", "Virginia Woolf", 2000, _B),
    ("Dubliners", "James Joyce", 2000, _B),
    ("White Teeth", "Zadie Smith", 2001, _B),
    ("Atonement", "Ian McEwan", 2002, _B),
    ("Wolf Hall", "Hilary Mantel", 2010, _B),
    ("Midnight's Children", "Salman Rushdie", 2006, _B),
    ("Things Fall Apart", "Chinua Achebe", 2001, _B),
    ("Half of a Yellow Sun", "Chimamanda Ngozi Adichie", 2007, _B),
    ("Americanah", "Chimamanda Ngozi Adichie", 2014, _B),
    ("American Gods", "Neil Gaiman", 2005, _B),
    ("Coraline", "Neil Gaiman", 2013, _C),
    ("Guards! Guards!", "Terry Pratchett", 2013, _B),
    ("Small Gods", "Terry Pratchett", 2013, _B),
    ("Dune", "Frank Herbert", 2005, _B),
    ("Foundation", "Isaac Asimov", 2004, _B),
    ("Fahrenheit 451", "Ray Bradbury", 2013, _B),
    ("Brave New World", "Aldous Huxley", 2007, _B),
    ("Lord of the Flies", "William Golding", 1999, _B),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling", 2014, _C),
    ("Harry Potter and the Chamber of Secrets", "J. K. Rowling", 2014, _C),
    ("Harry Potter and the Prisoner of Azkaban", "J. K. Rowling", 2014, _C),
    ("Matilda", "Roald Dahl", 2016, _C),
    ("Charlie and the Chocolate Factory", "Roald Dahl", 2016, _C),
    ("The Lion, the Witch and the Wardrobe", "C. S. Lewis", 2009, _C),
    ("Winnie-the-Pooh", "A. A. Milne", 2016, _C),
    ("Alice's Adventures in Wonderland", "Lewis Carroll", 2015, _C),
    ("Northern Lights", "Philip Pullman", 2011, _C),
    ("Charlotte's Web", "E. B. White", 2014, _C),
    ("The Very Hungry Caterpillar", "Eric Carle", 2018, _C),
    ("The Gruffalo", "Julia Donaldson", 2016, _C),
    ("Where the Wild Things Are", "Maurice Sendak", 2012, _C),
    ("The Jungle Book", "Rudyard Kipling", 2013, _C),
    ("Sapiens: A Brief History of Humankind", "Yuval Noah Harari", 2015, _B),
    ("A Brief History of Time", "Stephen Hawking", 1998, _B),
    ("The Selfish Gene", "Richard Dawkins", 2016, _B),
    ("Guns, Germs, and Steel", "Jared Diamond", 2017, _B),
    ("Thinking, Fast and Slow", "Daniel Kahneman", 2012, _B),
    ("Cosmos", "Carl Sagan", 2013, _B),
    ("The Silk Roads: A New History of the World", "Peter Frankopan", 2016, _B),
    ("Silent Spring", "Rachel Carson", 2002, _B),
    ("Educated", "Tara Westover", 2018, _B),
    ("Becoming", "Michelle Obama", 2018, _B),
    ("The C Programming Language", "Brian W. Kernighan, Dennis M. Ritchie", 1988, _B),
    ("Fluent Python", "Luciano Ramalho", 2022, _B),
    ("Learning Python", "Mark Lutz", 2013, _B),
    ("Structure and Interpretation of Computer Programs", "Harold Abelson, Gerald J. Sussman",
     1996, _B),
    ("The Art of Computer Programming, Volume 1", "Donald E. Knuth", 1997, _B),
    ("Clean Code", "Robert C. Martin", 2008, _B),
    ("The Pragmatic Programmer", "David Thomas, Andrew Hunt", 2019, _B),
    ("Design Patterns", "Erich Gamma, Richard Helm, Ralph Johnson, John Vlissides", 1994, _B),
    ("Designing Data-Intensive Applications", "Martin Kleppmann", 2017, _B),
    ("Introduction to Algorithms", "Thomas H. Cormen, Charles E. Leiserson, Ronald L. Rivest,"
     " Clifford Stein", 2022, _B),
    ("Automate the Boring Stuff with Python", "Al Sweigart", 2019, _B),
    ("Oxford Advanced Learner's Dictionary", "A. S. Hornby", 2020, _R),
    ("Collins English Dictionary", "HarperCollins", 2018, _R),
    ("Merriam-Webster's Collegiate Dictionary", "Merriam-Webster", 2014, _R),
    ("Cambridge English Pronouncing Dictionary", "Daniel Jones", 2011, _R),
    ("Roget's Thesaurus of English Words and Phrases", "Peter Mark Roget", 2004, _R),
    ("Oxford Dictionary of Quotations", "Elizabeth Knowles", 2014, _R),
    ("The Chicago Manual of Style", "University of Chicago Press", 2017, _R),
    ("The Times Atlas of the World", "Times Books", 2018, _R),
    ("National Geographic Atlas of the World", "National Geographic", 2019, _R),
)


def _isbn13(first12: str) -> str:
    """Append the ISBN-13 check digit to a 12-digit string."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return first12 + str((10 - total % 10) % 10)


def _synthetic_isbn(language: str, n: int) -> str:
    """The n-th (0-based) synthetic ISBN of a language; distinct for distinct n."""
    if language == "kk":  # 978-601: Kazakhstan, 6 digits left for registrant + publication
        return _isbn13(f"978601{(104_729 * n + 31_337) % 10**6:06d}")
    if language == "ru":  # 978-5: Russian-speaking area, 8 digits left
        return _isbn13(f"9785{(7_654_321 * n + 1_234_567) % 10**8:08d}")
    # 978-0 / 978-1: English-speaking area; alternate the two groups.
    return _isbn13(f"978{n % 2}{(3_141_593 * n + 2_718_281) % 10**8:08d}")


@cache
def _catalogue() -> tuple[Title, ...]:
    """Build the fixed catalogue once."""
    titles: list[Title] = []
    for language, rows in (("kk", _KK), ("ru", _RU), ("en", _EN)):
        for n, (name, author, year, item_type) in enumerate(rows):
            titles.append(Title(
                id=f"T{len(titles) + 1:05d}",
                isbn=_synthetic_isbn(language, n),
                title=name,
                author=author,
                language=language,
                year=year,
                item_type=item_type,
            ))
    return tuple(titles)


def catalogue() -> list[Title]:
    """The fixed catalogue (about a third each Kazakh, Russian, English), ids T00001..."""
    return list(_catalogue())


def default_nodes() -> list[NodeSpec]:
    """The demo network: two vending machines and the central branch."""
    return [
        NodeSpec("m-almaly", "machine", "Almaly metro station", 40),
        NodeSpec("m-mega", "machine", "MEGA Alma-Ata mall", 40),
        NodeSpec("b-central", "branch", "Central City Library (Pushkin)", 0),
    ]


# --------------------------------------------------------------------------------------
# Readers. Names are spelled as on Kazakhstani ID cards (Russian-style transliteration of
# Kazakh names, which is what a library card shows), first name then surname.

_KZ_MALE = (
    "Нурлан", "Ерлан", "Асхат", "Данияр", "Арман", "Бауыржан", "Ержан", "Самат", "Тимур",
    "Азамат", "Алибек", "Руслан", "Канат", "Серик", "Марат", "Айдос", "Дамир", "Ерасыл",
    "Нурсултан", "Бекзат", "Олжас", "Жандос", "Темирлан", "Алихан", "Санжар", "Мирас",
    "Ильяс", "Дияр", "Рахат", "Болат", "Ербол", "Куаныш", "Медет", "Адиль", "Аслан",
)
_KZ_FEMALE = (
    "Айгерим", "Дана", "Айдана", "Жанар", "Гульнара", "Асель", "Динара", "Мадина", "Камила",
    "Аружан", "Томирис", "Айша", "Жансая", "Сауле", "Гаухар", "Алия", "Дильназ", "Айнур",
    "Ботагоз", "Меруерт", "Назерке", "Акмарал", "Карлыгаш", "Салтанат", "Жулдыз", "Инкар",
    "Балжан", "Индира", "Толкын", "Райхан", "Арайлым", "Анель", "Сабина", "Дарига",
)
_KZ_SURNAMES = (  # masculine forms; the feminine adds "а"
    "Абенов", "Жумабеков", "Ахметов", "Сулейменов", "Омаров", "Нургалиев", "Касымов",
    "Бекмуханбетов", "Искаков", "Тулегенов", "Садыков", "Есимов", "Кенжебаев", "Ермеков",
    "Мусин", "Жакупов", "Байжанов", "Утепов", "Калиев", "Оспанов", "Кудайбергенов",
    "Серикбаев", "Турсунов", "Абдрахманов", "Ибраимов", "Бейсенов", "Мухамеджанов",
    "Сатпаев", "Нуркенов", "Даулетов", "Смагулов", "Амиров", "Жексенбаев", "Тажибаев",
)
_KZ_SURNAMES_PLAIN = (  # the same for men and women
    "Сейткали", "Оспан", "Жаксылык", "Нурпеис", "Серик", "Айтбай", "Кемел", "Бекболат",
    "Мукан", "Темирхан", "Ахмет", "Абдулла",
)
_RU_MALE = (
    "Александр", "Дмитрий", "Сергей", "Андрей", "Алексей", "Максим", "Иван", "Михаил",
    "Николай", "Владимир", "Евгений", "Павел", "Артём", "Виктор", "Игорь", "Олег", "Денис",
    "Кирилл", "Роман", "Никита", "Юрий", "Константин",
)
_RU_FEMALE = (
    "Елена", "Ольга", "Наталья", "Татьяна", "Ирина", "Анна", "Мария", "Светлана",
    "Екатерина", "Юлия", "Анастасия", "Людмила", "Виктория", "Ксения", "Дарья", "Алина",
    "Галина", "Валентина", "Вера", "Полина", "Оксана", "Надежда",
)
_RU_SURNAMES = (  # masculine forms; the feminine adds "а"
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
    "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
    "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин",
    "Захаров", "Белов", "Тарасов", "Гусев",
)
_RU_SURNAMES_PLAIN = ("Шевченко", "Бондаренко", "Коваленко", "Ткаченко", "Кравченко")
# Almaty's Korean, Uyghur and Tatar communities (Korean surnames do not inflect).
_KOREAN_SURNAMES = ("Ким", "Пак", "Цой", "Ли", "Тен", "Хван", "Югай", "Шин")
_UY_TT_MALE = ("Алимжан", "Дильмурат", "Ринат", "Ильдар", "Шухрат", "Рашид")
_UY_TT_FEMALE = ("Гульнур", "Рейхан", "Альфия", "Дильбар", "Эльмира", "Зульфия")
_UY_TT_SURNAMES = (
    "Масимов", "Исмаилов", "Розахунов", "Галиев", "Хайруллин", "Сабиров", "Юсупов",
)

_CATEGORY_WEIGHTS = (
    ("adult", 52), ("student", 14), ("child", 14), ("pensioner", 13),
    ("partner_staff", 3), ("supported", 4),
)
_WEAK_PINS = frozenset(
    {f"{d}" * 4 for d in range(10)} | {"1234", "4321", "0123", "1212", "2580", "1004", "2000"}
)


def _feminine(surname: str) -> str:
    """The feminine form of a Russian-pattern surname (-ов/-ев/-ин + а)."""
    return surname + "а"


def _reader_name(rng: random.Random) -> str:
    """A plausible Almaty resident's name, first name then surname."""
    female = rng.random() < 0.53
    group = rng.random()
    if group < 0.66:  # Kazakh
        first = rng.choice(_KZ_FEMALE if female else _KZ_MALE)
        if rng.random() < 0.2:
            last = rng.choice(_KZ_SURNAMES_PLAIN)
        else:
            last = rng.choice(_KZ_SURNAMES)
            last = _feminine(last) if female else last
    elif group < 0.93:  # Russian (and Ukrainian surnames)
        first = rng.choice(_RU_FEMALE if female else _RU_MALE)
        if rng.random() < 0.12:
            last = rng.choice(_RU_SURNAMES_PLAIN)
        else:
            last = rng.choice(_RU_SURNAMES)
            last = _feminine(last) if female else last
    elif group < 0.97:  # Korean: Russian first names, invariant surnames
        first = rng.choice(_RU_FEMALE if female else _RU_MALE)
        last = rng.choice(_KOREAN_SURNAMES)
    else:  # Uyghur / Tatar
        first = rng.choice(_UY_TT_FEMALE if female else _UY_TT_MALE)
        last = rng.choice(_UY_TT_SURNAMES)
        last = _feminine(last) if female else last
    return f"{first} {last}"


def _pin(rng: random.Random) -> str:
    """A 4-digit PIN, avoiding the obvious ones a card-issuing desk would refuse."""
    while True:
        pin = f"{rng.randrange(10_000):04d}"
        if pin not in _WEAK_PINS:
            return pin


def _readers(n: int, rng: random.Random) -> list[Reader]:
    """``n`` readers with cards R000001..; mostly adults."""
    categories = [c for c, _ in _CATEGORY_WEIGHTS]
    cum = list(accumulate(w for _, w in _CATEGORY_WEIGHTS))
    drawn = rng.choices(categories, cum_weights=cum, k=n)
    return [
        Reader(card=f"R{i + 1:06d}", name=_reader_name(rng), category=drawn[i], pin=_pin(rng))
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------
# Copies.

_TYPE_POPULARITY = {"book": 1.0, "children": 1.2, "reference": 0.3}


def _title_counts(titles: list[Title], copies: int, rng: random.Random) -> list[int]:
    """How many copies each title gets: at least one each if possible, then heavily skewed."""
    n = len(titles)
    counts = [0] * n
    if copies >= n:
        counts = [1] * n
        extra = copies - n
    else:
        extra = copies
    # Log-normal popularity: a few bestsellers, a long tail of single copies.
    weights = [rng.lognormvariate(0.0, 0.9) * _TYPE_POPULARITY[t.item_type] for t in titles]
    for i in rng.choices(range(n), cum_weights=list(accumulate(weights)), k=extra):
        counts[i] += 1
    return counts


def _validate(nodes: list[NodeSpec], copies: int, readers: int) -> None:
    """Reject inconsistent arguments with a ValueError."""
    if copies < 0 or readers < 0:
        raise ValueError("copies and readers must be >= 0")
    seen: set[str] = set()
    for node in nodes:
        if node.id in seen:
            raise ValueError(f"duplicate node id {node.id!r}")
        seen.add(node.id)
        if node.kind not in NODE_KINDS:
            raise ValueError(f"node {node.id!r}: kind must be one of {NODE_KINDS}")
        if node.kind == "branch" and node.slots != 0:
            raise ValueError(f"branch {node.id!r} must have 0 slots")
        if node.slots < 0:
            raise ValueError(f"node {node.id!r}: slots must be >= 0")


def _machine_fill(machines: list[NodeSpec], available: int) -> list[int]:
    """How many slots of each machine to fill: all if possible, else shared out evenly."""
    capacity = [m.slots for m in machines]
    if available >= sum(capacity):
        return capacity
    fill = [0] * len(machines)
    while available > 0:
        for i, cap in enumerate(capacity):
            if available and fill[i] < cap:
                fill[i] += 1
                available -= 1
    return fill


def generate(
    nodes: list[NodeSpec], *, copies: int = 3000, readers: int = 300, seed: int = 7
) -> SampleData:
    """Generate a full data set for ``nodes``, deterministic for ``seed``.

    ``copies`` copies are spread over the catalogue (every title gets one if there are at
    least as many copies as titles; popular titles get many more). Every slot 1..N of every
    machine gets exactly one copy (circulating items first, reference last); slots stay empty
    only when there are too few copies, in which case the machines share them evenly and
    fill their lowest slots. All remaining copies go on branch shelves (slot ``None``),
    spread at random over the branches. If ``nodes`` has no branch, those remaining copies
    are *not created*, so fewer than ``copies`` copies are returned.
    """
    _validate(nodes, copies, readers)
    master = random.Random(seed)
    copy_rng = random.Random(master.getrandbits(64))
    reader_rng = random.Random(master.getrandbits(64))

    titles = catalogue()
    counts = _title_counts(titles, copies, copy_rng)
    pool = [i for i, k in enumerate(counts) for _ in range(k)]
    copy_rng.shuffle(pool)
    # Reference works do not circulate: keep them out of the machines unless there is nothing
    # else to put in. Whatever the machines do not take is reshuffled for the shelves.
    is_ref = [t.item_type == "reference" for t in titles]
    pool = [i for i in pool if not is_ref[i]] + [i for i in pool if is_ref[i]]

    machines = [n for n in nodes if n.kind == "machine"]
    branches = [n for n in nodes if n.kind == "branch"]
    result: list[Copy] = []
    taken = 0
    for machine, fill in zip(machines, _machine_fill(machines, len(pool)), strict=True):
        for slot in range(1, fill + 1):
            title_id = titles[pool[taken]].id
            result.append(Copy(f"C{len(result) + 1:07d}", title_id, machine.id, machine.id, slot))
            taken += 1
    rest = pool[taken:]
    copy_rng.shuffle(rest)
    if branches and rest:
        shelf = (copy_rng.choices(branches, k=len(rest)) if len(branches) > 1
                 else [branches[0]] * len(rest))
        for i, branch in zip(rest, shelf, strict=True):
            result.append(Copy(f"C{len(result) + 1:07d}", titles[i].id, branch.id, branch.id, None))

    return SampleData(
        titles=titles,
        copies=result,
        readers=_readers(readers, reader_rng),
        nodes=list(nodes),
    )
