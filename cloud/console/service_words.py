"""The services' words in Kazakh, Russian and English: notices, the console's service pages
and the catalogue's (registered with cloud.i18n)."""
from __future__ import annotations

from cloud import i18n

i18n.register({
    # -- notices to readers ------------------------------------------------------------
    "sv.notice.seated.subject": ("Сізге орын табылды", "Для вас нашлось место",
                                 "A seat is yours"),
    "sv.notice.seated.body": (
        "«{service}» ({when}, {place}): күту тізімінен орын сізге берілді. Келіңіз!",
        "«{service}» ({when}, {place}): место из листа ожидания теперь ваше. Ждём вас!",
        "«{service}» ({when}, {place}): a seat from the waiting list is now yours. "
        "See you there!"),
    "sv.notice.waitlisted.subject": ("Сіз күту тізіміндесіз", "Вы в листе ожидания",
                                     "You are on the waiting list"),
    "sv.notice.waitlisted.body": (
        "«{service}» ({when}, {place}): екі филиал соңғы орынды бір уақытта берді, ал ертерек "
        "жазылу орынды сақтады. Сіз күту тізімінің басындасыз; төлеген болсаңыз, филиал "
        "ақшаны қайтарады немесе орын табады.",
        "«{service}» ({when}, {place}): два филиала одновременно отдали последнее место, и его "
        "сохранила более ранняя запись. Вы первые в листе ожидания; если вы уже заплатили, "
        "филиал вернёт деньги или найдёт вам место.",
        "«{service}» ({when}, {place}): two branches gave away the last seat at the same "
        "time and the earlier booking keeps it. You are at the top of the waiting list; if "
        "you paid, the branch will refund you or find you a seat."),
    "sv.notice.cancelled.subject": ("Сабақ болмайды", "Занятие отменено",
                                    "The session is cancelled"),
    "sv.notice.cancelled.body": (
        "«{service}» ({when}, {place}) болмайды. Төлеген болсаңыз, ақшаны филиал қайтарады.",
        "«{service}» ({when}, {place}) отменено. Если вы заплатили, филиал вернёт деньги.",
        "«{service}» ({when}, {place}) is cancelled. If you paid, the branch will refund you."),
})
